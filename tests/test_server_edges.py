"""Edges of starting and naming servers: a sink the actor process cannot load, a name reused
right after stop(), and the handle's stats()."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import start
from thespian.actors import ActorSystem

from pachka_actors import Pachka
from pachka_actors.metrics import Stats
from pachka_actors.systems import session_pids
from pachka_actors.testing import RecordingSink


@pytest.mark.multiproc
@pytest.mark.parametrize("base", ["multiprocTCPBase", "multiprocQueueBase"])
def test_a_sink_class_the_actor_process_cannot_load_is_named_at_once(base: str) -> None:
    tests = Path(__file__).parent
    result = subprocess.run([sys.executable, str(tests / "late_sink.py"), base],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(tests)})
    assert result.returncode == 0, result.stderr
    error, sid = result.stdout.splitlines()
    assert error.startswith("ConfigError after "), error
    assert float(error.split()[2]) < 5.0, error  # not the 30 s ask timeout
    assert "sink:" in error and "LateSink" in error and "__main__" in error
    assert not session_pids(int(sid))  # nothing left running


@pytest.mark.parametrize("base", ["multiprocTCPBase", "multiprocQueueBase"])
def test_a_name_can_be_started_again_right_after_stop(base: str, tmp_path: Path,
                                                      request: pytest.FixtureRequest) -> None:
    system: ActorSystem = request.getfixturevalue(
        "tcp_system" if base == "multiprocTCPBase" else "queue_system")
    for round_ in range(5):
        sink = RecordingSink(tmp_path / str(round_))
        server = Pachka.start(system=system, sink=sink, name="events", ask_timeout=20,
                              max_batch_size=2, max_batch_delay=None)
        assert server.send_messages([round_, round_]) == 2
        server.stop()
        assert sink.messages() == [round_, round_]


def test_stats_through_the_handle(tcp_system: ActorSystem, tmp_path: Path) -> None:
    server = start(tcp_system, tmp_path, max_batch_size=2, critical_queue_size=4)
    for i in range(4):
        server.send_message(i)
    assert server.send_messages([4, 5, 6]) >= 0
    stats = server.stats()
    assert isinstance(stats, Stats)
    assert stats.accepted == 7 - stats.refused_queue_full
    assert stats.accepted == stats.exported + stats.queue_length + stats.batch_length
    server.stop()
