"""Scale-out (issue 10) on one machine: a convention of multiprocTCPBase admins on loopback.

The leader runs the test's handles; members have capabilities of their own.
Where an actor runs is read from the OS: each admin daemon has its own session,
and the sink records the session of the exporter (forked by its server).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from scale_sinks import HostSink, delivered, entries
from sinks import wait_for
from support import process_gone

from pachka_actors import ChildSpec, ConfigError, Overloaded, Pachka, PachkaPool, Supervisor
from pachka_actors._placement import host_admin
from pachka_actors.config import capabilities_satisfy
from pachka_actors.errors import PartitionUnreachable, StartChildError
from pachka_actors.pool import partition_for
from pachka_actors.supervisor import SupervisorActor
from pachka_actors.systems import Convention, admin_port, isolated_convention


def multihost(test: Callable[..., None]) -> Callable[..., None]:
    """Starts several admins: `-m "not multihost"` skips these."""
    marked: Callable[..., None] = pytest.mark.multiproc(pytest.mark.multihost(test))
    return marked


LEADER = {"pachka.host": "leader"}
M1 = {"pachka.host": "m1", "pachka.role": "batcher"}
M2 = {"pachka.host": "m2", "pachka.role": "batcher"}
ON_M1 = {"pachka.host": "m1"}
ON_M2 = {"pachka.host": "m2"}
#: Messages stay queued until a stop, so a drain has something to do.
HOLD: dict[str, Any] = {"max_batch_size": 10_000, "max_batch_delay": None}


@pytest.fixture
def convention() -> Iterator[Convention]:
    with isolated_convention(LEADER, (M1, M2)) as running:
        yield running


def server_sids(directory: Path) -> set[int]:
    return {e["sid"] for e in entries(directory)}


# ---- placement ----------------------------------------------------------------------------


def test_capability_check_is_equality_of_every_requirement() -> None:
    assert capabilities_satisfy({"a": 1, "b": "x"}, {"a": 1})
    assert capabilities_satisfy({"a": 1}, None) and capabilities_satisfy(None, {})
    assert not capabilities_satisfy({"a": 1}, {"a": 2})
    assert not capabilities_satisfy({"a": None}, {"b": None})  # absent is not None
    assert not capabilities_satisfy(None, {"a": 1})


@pytest.mark.parametrize("bad", [["m1"], {1: "x"}, {"": "x"}, {"k": lambda: 0}])
def test_requirements_are_validated_before_any_actor(bad: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="requirements"):
        Pachka.child_spec(id="s", sink=HostSink(tmp_path), requirements=bad)
    with pytest.raises(ConfigError, match="requirements"):
        ChildSpec("c", SupervisorActor, requirements=bad)
    with pytest.raises(ConfigError, match="requirements"):
        PachkaPool.child_spec(id="p", partitions=2, sink=HostSink(tmp_path),
                              requirements=[ON_M1, bad])


@multihost
def test_a_placed_server_and_its_exporters_run_on_the_member(
        convention: Convention, tmp_path: Path) -> None:
    leader, m1, m2 = convention.leader, *convention.members
    server = Pachka.start(system=leader.system, sink=HostSink(tmp_path), max_batch_size=5,
                          requirements=ON_M2)
    admin = host_admin(leader.system, server.address, 5)
    assert admin_port(admin) == m2.port
    for i in range(20):
        server.send_message(i)
    server.stop(10)
    assert delivered(tmp_path) == list(range(20))
    assert server_sids(tmp_path) == {m2.sid}
    assert m1.sid != m2.sid != leader.sid


@multihost
def test_export_timeout_still_kills_a_hung_exporter_of_a_placed_server(
        convention: Convention, tmp_path: Path) -> None:
    m1 = convention.members[0]
    (tmp_path / "hang-once").touch()
    server = Pachka.start(system=convention.leader.system, sink=HostSink(tmp_path),
                          max_batch_size=3, export_timeout=0.3, requirements=ON_M1)
    server.send_messages([1, 2, 3])
    wait_for(lambda: delivered(tmp_path) == [1, 2, 3])
    [hung] = entries(tmp_path, "hang")
    [done] = entries(tmp_path)
    # The hung exporter ran on the member, a child of the server, and was SIGKILLed.
    assert hung["sid"] == m1.sid and hung["ppid"] == done["ppid"]
    assert wait_for(lambda: process_gone(hung["pid"]), 5)
    server.stop(10)


@multihost
def test_requirements_no_member_meets_are_a_config_error_at_once(
        convention: Convention, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"requirements.*'pachka.host': 'nowhere'"):
        Pachka.start(system=convention.leader.system, sink=HostSink(tmp_path),
                     requirements={"pachka.host": "nowhere"})
    assert time.monotonic() - started < 2


@multihost
def test_a_supervisor_places_its_child_and_fails_a_child_no_member_can_host(
        convention: Convention, tmp_path: Path) -> None:
    system, m1 = convention.leader.system, convention.members[0]
    spec = Pachka.child_spec(id="batcher", sink=HostSink(tmp_path), requirements=ON_M1)
    supervisor = Supervisor.start([spec], system=system, ask_timeout=20)
    [(_, address, _)] = supervisor.which_children()
    assert admin_port(host_admin(system, address, 5)) == m1.port
    supervisor.stop(20)

    nowhere = Pachka.child_spec(id="batcher", sink=HostSink(tmp_path),
                                requirements={"pachka.host": "nowhere"})
    started = time.monotonic()
    with pytest.raises(StartChildError) as failed:
        Supervisor.start([nowhere], system=system, ask_timeout=20)
    assert time.monotonic() - started < 5
    assert isinstance(failed.value.reason, ConfigError)
    assert "{'pachka.host': 'nowhere'}" in str(failed.value)


# ---- the pool -----------------------------------------------------------------------------


@multihost
def test_a_pool_keeps_each_keys_order_across_partitions_on_two_members(
        convention: Convention, tmp_path: Path) -> None:
    m1, m2 = convention.members
    pool = PachkaPool.start(system=convention.leader.system, partitions=2,
                            key=lambda message: message[0], requirements=[ON_M1, ON_M2],
                            sink=HostSink(tmp_path), max_batch_size=7, max_batch_delay=0.05)
    keys = [f"user-{k}" for k in range(8)]
    sent = [[key, seq] for seq in range(40) for key in keys]
    for message in sent[:160]:
        pool.send_message(message)
    assert pool.send_messages(sent[160:]) == len(sent) - 160
    assert [s.status is not None for s in pool.status()] == [True, True]
    pool.stop(20)

    batches = entries(tmp_path)
    assert sorted(map(tuple, delivered(tmp_path))) == sorted(map(tuple, sent))
    assert {b["sid"] for b in batches} == {m1.sid, m2.sid}
    sids = {m1.sid: 0, m2.sid: 1}
    for key in keys:
        mine = [(b["sid"], m[1]) for b in batches for m in b["batch"] if m[0] == key]
        assert [seq for _, seq in mine] == list(range(40)), key  # in order
        assert {sids[sid] for sid, _ in mine} == {partition_for(key, 2)}  # one partition


@multihost
def test_round_robin_spreads_and_overload_is_exact_per_partition(
        convention: Convention, tmp_path: Path) -> None:
    pool = PachkaPool.start(system=convention.leader.system, partitions=2, linger=None,
                            requirements=[ON_M1, ON_M2], sink=HostSink(tmp_path),
                            critical_queue_size=3, max_batch_size=10_000,
                            max_batch_delay=3600)  # below a batch: an hour's delay holds it
    for i in range(6):
        pool.send_message(i)
    assert [s.status.queue_length for s in pool.status() if s.status] == [3, 3]
    for i in (6, 7):  # one to each partition: both are full
        with pytest.raises(Overloaded):
            pool.send_message(i)
    assert [s.status.queue_length for s in pool.status() if s.status] == [3, 3]
    pool.stop(20)
    assert sorted(delivered(tmp_path)) == list(range(6))


# ---- host failures ------------------------------------------------------------------------


@multihost
def test_a_member_shut_down_drains_and_its_partitions_restart_on_another(
        tmp_path: Path) -> None:
    with isolated_convention(LEADER, (M1,)) as convention:
        system, m1 = convention.leader.system, convention.members[0]
        spec = PachkaPool.child_spec(id="pool", partitions=2, max_restarts=20,
                                     requirements={"pachka.role": "batcher"},
                                     sink=HostSink(tmp_path), **HOLD)
        top = Supervisor.start([spec], system=system, ask_timeout=20)
        [(_, pool_supervisor, _)] = top.which_children()
        pool = PachkaPool.connect(system, pool_supervisor, ask_timeout=5)
        assert {admin_port(s.host) for s in pool.status()} == {m1.port}
        m2 = convention.add_member(M2)
        first = list(range(100))
        for i in first:
            pool.send_message(i)
        pool.flush()
        assert sum(s.status.queue_length for s in pool.status() if s.status) == 100

        convention.stop_member(m1)  # graceful: its servers drain, then exit
        assert sorted(delivered(tmp_path)) == first  # drained on m1, before it was gone
        assert server_sids(tmp_path) == {m1.sid}

        def restarted_on_m2() -> bool:
            pool.refresh()
            found = pool.status()
            return all(s.status is not None and admin_port(s.host) == m2.port for s in found)

        wait_for(restarted_on_m2, 20)
        second = list(range(100, 150))
        for i in second:
            pool.send_message(i)
        pool.close()
        top.stop(20)
        assert sorted(delivered(tmp_path)) == first + second  # nothing accepted lost
        assert server_sids(tmp_path) == {m1.sid, m2.sid}


@multihost
def test_a_killed_member_is_reported_unreachable_within_the_reregistration_period(
        convention: Convention, tmp_path: Path) -> None:
    m2 = convention.members[1]
    pool = PachkaPool.start(system=convention.leader.system, partitions=2, linger=None,
                            key=lambda m: m, requirements=[ON_M1, ON_M2], ask_timeout=3,
                            check_interval=0.2, sink=HostSink(tmp_path), **HOLD)
    for i in range(20):
        pool.send_message(i)
    on_m2 = [i for i in range(20) if partition_for(i, 2) == 1]
    assert 0 < len(on_m2) < 20
    assert [s.status.queue_length for s in pool.status() if s.status] == [20 - len(on_m2),
                                                                           len(on_m2)]
    killed = time.monotonic()
    convention.kill_member(m2)
    # On loopback a dead process refuses connections, so asks fail at once; across a
    # network they would wait out ask_timeout (3 s here) until the convention knows.
    silent = pool.status()[1]
    assert silent.status is None and "no answer" in (silent.unreachable or "")
    statuses = wait_for(lambda: "left the convention" in (
        (found := pool.status())[1].unreachable or "") and found, 40)
    noticed = time.monotonic() - killed
    # CONVENTION_REREGISTRATION_PERIOD=0:05: three missed check-ins, 15-20 s.
    assert noticed < 30, noticed
    print(f"\nkilled member: the convention reported it after {noticed:.1f} s")
    # Thespian 4.0.1 drops the live member m1 at the same time (it never re-registers):
    # its partition answers, so it stays reachable.
    assert statuses[0].unreachable is None, statuses[0].unreachable
    assert statuses[0].status is not None
    assert statuses[1].at_risk == len(on_m2)  # what its queue held: lost with the host

    started = time.monotonic()
    with pytest.raises(PartitionUnreachable) as refused:
        pool.send_message(on_m2[0])
    assert refused.value.partition == 1 and time.monotonic() - started < 1
    first = pool.partitions[0]
    assert first is not None
    first.stop(10)
    assert sorted(delivered(tmp_path)) == [i for i in range(20) if i not in on_m2]
    assert os.getsid(0) not in server_sids(tmp_path)
