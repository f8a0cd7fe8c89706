"""`PachkaPool` on one admin: routing, fan-out over partitions, validation."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from scale_sinks import HostSink, delivered, entries
from thespian.actors import ActorSystem

from pachka_actors import ConfigError, Overloaded, PachkaError, PachkaPool
from pachka_actors.pool import partition_for


def test_the_key_hash_is_crc32_and_the_same_in_every_process() -> None:
    assert partition_for("user-1", 7) == zlib.crc32(b"user-1") % 7
    assert partition_for(b"user-1", 7) == partition_for("user-1", 7)
    assert partition_for(("a", 1), 5) == zlib.crc32(b"('a', 1)") % 5
    keys = ["alpha", "beta", "gamma", ("tenant", 42), 12345]
    here = [partition_for(key, 4) for key in keys]
    code = ("from pachka_actors.pool import partition_for; "
            f"print([partition_for(k, 4) for k in {keys!r}])")
    for seed in ("1", "2"):  # str hashes differ between these interpreters; ours must not
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}, check=True).stdout
        assert out.strip() == str(here)


@pytest.mark.parametrize("options", [{"partitions": 0}, {"partitions": "2"},
                                     {"partitions": 2, "key": "user"},
                                     {"partitions": 2, "name": "x"},
                                     {"partitions": 2, "requirements": [{"a": 1}]},
                                     {"partitions": 2, "max_batch_size": 0}])
def test_bad_pool_options_are_refused_before_any_actor(options: dict[str, object],
                                                       tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        PachkaPool.start(system=None, sink=HostSink(tmp_path), **options)  # type: ignore[arg-type]


def test_keyed_messages_keep_their_order_and_round_robin_spreads(
        any_system: ActorSystem, tmp_path: Path) -> None:
    (tmp_path / "k").mkdir()
    keyed = PachkaPool.start(system=any_system, partitions=3, key=lambda m: m[0],
                             sink=HostSink(tmp_path / "k"), max_batch_size=4,
                             max_batch_delay=None)
    sent = [[f"k{k}", n] for n in range(10) for k in range(5)]
    for message in sent[:25]:
        keyed.send_message(message)
    assert keyed.send_messages(sent[25:]) == 25
    queued = [s.status.queue_length + s.status.batch_length for s in keyed.status() if s.status]
    assert sum(queued) <= 50 and len(queued) == 3
    keyed.stop()
    got = delivered(tmp_path / "k")
    assert sorted(map(tuple, got)) == sorted(map(tuple, sent))
    for k in range(5):
        assert [n for key, n in got if key == f"k{k}"] == list(range(10))

    (tmp_path / "r").mkdir()
    spread = PachkaPool.start(system=any_system, partitions=2, sink=HostSink(tmp_path / "r"),
                              max_batch_size=100, max_batch_delay=3600, linger=None,
                              critical_queue_size=2)  # full queues, no batch before stop()
    for i in range(4):
        spread.send_message(i)
    assert [s.status.queue_length for s in spread.status() if s.status] == [2, 2]
    with pytest.raises(Overloaded):
        spread.send_message(4)
    spread.stop()
    assert sorted(delivered(tmp_path / "r")) == [0, 1, 2, 3]
    batches = entries(tmp_path / "r")
    assert sorted(len(b["batch"]) for b in batches) == [2, 2]  # one drain per partition


def test_a_connected_pool_is_stopped_by_its_supervisor_not_by_the_handle(
        simple_system: ActorSystem, tmp_path: Path) -> None:
    from pachka_actors import Supervisor

    spec = PachkaPool.child_spec(id="pool", partitions=2, sink=HostSink(tmp_path))
    supervisor = Supervisor.start([spec], system=simple_system)
    [(_, address, _)] = supervisor.which_children()
    pool = PachkaPool.connect(simple_system, address)
    assert len(pool) == 2
    with pytest.raises(PachkaError, match="supervised"):
        pool.stop()
    pool.send_message("x")
    pool.close()
    supervisor.stop()
    assert delivered(tmp_path) == ["x"]
