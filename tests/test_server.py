"""The Pachka server on real Thespian systems: the original's test suite, ported, and more.

Timers are driven by hand (`timers="manual"`, then `FireTimer` with the timer
from `status()`), as Pachka's tests stub the timer and send `:batch_timeout`.
Sinks run in exporter processes, so they report through files (tests/sinks.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import pytest
from sinks import (
    DrainingRecordingSink,
    RecordingSink,
    StopDriver,
    calls,
    delivered,
    wait_for,
)
from support import actor_system, fire, process_gone, start, touch, wait_delivered, wait_state
from thespian.actors import ActorSystem

from pachka_actors import Overloaded, Pachka
from pachka_actors.errors import AlreadyStarted, NotStarted
from pachka_actors.messages import FireTimer, SendMessages, State, Timer, TimerKind

# ---- batching -------------------------------------------------------------------------------


def test_collects_and_sends_full_and_timeout_batches(any_system: ActorSystem,
                                                     tmp_path: Path) -> None:
    server = start(any_system, tmp_path)
    for step in range(3):
        first = step * 12
        for i in range(first, first + 12):
            server.send_message(i)
        # The handle lingers, and simpleSystemBase runs the server only inside calls.
        wait_delivered(server, tmp_path, first + 10)
        wait_state(server, State.IDLE)
        assert server.status().queue_length == 2
        fire(any_system, server, TimerKind.BATCH)
        wait_for(lambda: len(delivered(tmp_path)) == first + 12)  # noqa: B023
    batches = [e["batch"] for e in calls(tmp_path, "send_batch")]
    assert [len(b) for b in batches] == [5, 5, 2] * 3
    assert delivered(tmp_path) == list(range(36))
    assert {e["server_value"] for e in calls(tmp_path)} == {"sv"}
    server.stop()


def test_no_export_when_empty(any_system: ActorSystem, tmp_path: Path) -> None:
    server = start(any_system, tmp_path)
    assert server.status().timer is None  # no batch timer while nothing waits
    assert server.send_messages([]) == 0
    assert server.status().timer is None
    server.send_message("a")
    fire(any_system, server, TimerKind.BATCH)
    wait_for(lambda: delivered(tmp_path) == ["a"])
    wait_state(server, State.IDLE)
    assert server.status().timer is None
    server.stop()
    assert len(calls(tmp_path, "enter")) == 1


def test_batch_timer_fires_by_itself(tcp_system: ActorSystem, tmp_path: Path) -> None:
    server = start(tcp_system, tmp_path, timers="wakeup", max_batch_delay=0.05)
    server.send_messages([1, 2, 3])
    wait_for(lambda: delivered(tmp_path) == [1, 2, 3])
    server.stop()


def test_bulk_send_keeps_order_and_size(any_system: ActorSystem, tmp_path: Path) -> None:
    server = start(any_system, tmp_path, max_batch_size=7, critical_queue_size=1000)
    assert server.send_messages(range(100)) == 100
    server.stop()
    batches = [e["batch"] for e in calls(tmp_path, "send_batch")]
    assert max(len(b) for b in batches) == 7
    assert delivered(tmp_path) == list(range(100))


# ---- overload -------------------------------------------------------------------------------


def test_overload_refuses_and_recovers(tcp_system: ActorSystem, tmp_path: Path) -> None:
    touch(tmp_path, "block")
    server = start(tcp_system, tmp_path, critical_queue_size=10)
    server.send_messages(range(5))  # the in-flight batch does not count against capacity
    wait_for(lambda: calls(tmp_path, "enter"))
    assert server.send_messages(range(5, 20)) == 10  # 15..19 refused
    with pytest.raises(Overloaded) as refused:
        server.send_message("x")
    assert not refused.value.terminating
    assert server.send_messages(["x", "y"]) == 0
    os.remove(tmp_path / "block")
    wait_for(lambda: server.status().queue_length < 10)
    server.send_message(15)
    server.stop()
    assert delivered(tmp_path) == list(range(16))


# ---- failures and retries -------------------------------------------------------------------


def test_raised_and_returned_errors_are_retried_with_retry_number(
        any_system: ActorSystem, tmp_path: Path) -> None:
    touch(tmp_path, "fail")
    server = start(any_system, tmp_path)
    server.send_messages(range(5))
    wait_state(server, State.RETRY_BACKOFF)
    os.rename(tmp_path / "fail", tmp_path / "fail-return")
    fire(any_system, server, TimerKind.RETRY)
    wait_for(lambda: server.status().retry_num == 2)
    wait_state(server, State.RETRY_BACKOFF)
    os.remove(tmp_path / "fail-return")
    fire(any_system, server, TimerKind.RETRY)
    wait_for(lambda: delivered(tmp_path) == list(range(5)))
    wait_state(server, State.IDLE)
    assert server.status().retry_num == 0
    retries = calls(tmp_path, "retry_timeout")
    assert [(r["retry_num"], r["reason"], r["server_value"]) for r in retries] == [
        (1, "RuntimeError('sink down')", "sv"),
        (2, "ConnectionError('sink refused')", "sv"),
    ]
    assert [e["batch"] for e in calls(tmp_path, "enter")] == [list(range(5))] * 3
    server.stop()


def test_messages_keep_arriving_during_backoff(any_system: ActorSystem, tmp_path: Path) -> None:
    touch(tmp_path, "fail")
    server = start(any_system, tmp_path)
    server.send_messages(range(5))
    wait_state(server, State.RETRY_BACKOFF)
    server.send_messages(range(5, 13))
    assert server.status().queue_length == 8  # queued behind the failed batch, not exported
    os.remove(tmp_path / "fail")
    fire(any_system, server, TimerKind.RETRY)
    wait_for(lambda: len(delivered(tmp_path)) == 10)
    server.stop()
    assert delivered(tmp_path) == list(range(13))


def test_export_timeout_kills_the_exporter_without_losing_messages(
        tcp_system: ActorSystem, tmp_path: Path) -> None:
    touch(tmp_path, "hang")
    server = start(tcp_system, tmp_path)
    server.send_messages(range(8))
    [hung] = wait_for(lambda: calls(tmp_path, "enter"))
    fire(tcp_system, server, TimerKind.EXPORT)
    wait_for(lambda: process_gone(hung["pid"]))
    wait_state(server, State.RETRY_BACKOFF)
    assert calls(tmp_path, "retry_timeout")[0]["reason"] == "'killed'"
    os.remove(tmp_path / "hang")
    fire(tcp_system, server, TimerKind.RETRY)
    wait_for(lambda: len(delivered(tmp_path)) == 5)
    server.stop()
    assert delivered(tmp_path) == list(range(8))


def test_export_timeout_on_real_timers(tcp_system: ActorSystem, tmp_path: Path) -> None:
    touch(tmp_path, "hang", "once")
    server = Pachka.start(system=tcp_system, sink=RecordingSink(tmp_path, retry_seconds=0.01),
                          max_batch_size=4, export_timeout=0.2)
    server.send_messages(range(6))
    server.stop()
    first, *_ = calls(tmp_path, "enter")
    assert process_gone(first["pid"])
    assert delivered(tmp_path) == list(range(6))


def test_exporter_that_dies_is_retried(tcp_system: ActorSystem, tmp_path: Path) -> None:
    touch(tmp_path, "suicide")
    server = start(tcp_system, tmp_path)
    server.send_messages(range(5))
    wait_state(server, State.RETRY_BACKOFF)
    assert calls(tmp_path, "retry_timeout")[0]["reason"] == "'exited'"
    os.remove(tmp_path / "suicide")
    fire(tcp_system, server, TimerKind.RETRY)
    server.stop()
    assert delivered(tmp_path) == list(range(5))


# ---- shutdown -------------------------------------------------------------------------------


def test_stop_drains_through_send_batch(any_system: ActorSystem, tmp_path: Path) -> None:
    server = start(any_system, tmp_path)
    server.send_messages(range(12))
    server.stop()  # no need to fire the batch timer: termination exports what is left
    assert [len(e["batch"]) for e in calls(tmp_path, "send_batch")] == [5, 5, 2]
    assert delivered(tmp_path) == list(range(12))
    with pytest.raises(Exception):  # noqa: B017 - the actor is gone; any error will do
        Pachka(any_system, server.address, ask_timeout=1).send_message(1)


def test_stopping_server_refuses_new_messages(tcp_system: ActorSystem, tmp_path: Path) -> None:
    touch(tmp_path, "block")
    server = start(tcp_system, tmp_path)
    server.send_messages(range(5))
    driver = tcp_system.createActor(StopDriver)
    tcp_system.tell(driver, ("stop", server.address))
    wait_for(lambda: server.status().terminating)
    with pytest.raises(Overloaded) as refused:
        server.send_message(99)
    assert refused.value.terminating
    os.remove(tmp_path / "block")
    wait_for(lambda: tcp_system.ask(driver, "stopped?", 5))
    assert delivered(tmp_path) == list(range(5))


def test_in_flight_export_finishes_on_stop(tcp_system: ActorSystem, tmp_path: Path) -> None:
    touch(tmp_path, "block")
    server = start(tcp_system, tmp_path, sink=DrainingRecordingSink)
    server.send_messages(range(8))
    wait_for(lambda: calls(tmp_path, "enter"))
    driver = tcp_system.createActor(StopDriver)
    tcp_system.tell(driver, ("stop", server.address))
    wait_for(lambda: server.status().terminating)
    assert server.status().state is State.EXPORTING  # not cancelled: it may finish
    os.remove(tmp_path / "block")
    wait_for(lambda: tcp_system.ask(driver, "stopped?", 5))
    [exported] = calls(tmp_path, "send_batch")
    [drained] = calls(tmp_path, "drain_on_terminate")
    assert exported["batch"] == list(range(5))
    assert drained["batch"] == [5, 6, 7]


@pytest.mark.parametrize("sink", [RecordingSink, DrainingRecordingSink])
def test_in_flight_export_killed_on_timeout_during_stop(
        tcp_system: ActorSystem, tmp_path: Path, sink: type[RecordingSink]) -> None:
    touch(tmp_path, "hang")
    server = start(tcp_system, tmp_path, sink=sink)
    server.send_messages(range(8))
    [hung] = wait_for(lambda: calls(tmp_path, "enter"))
    driver = tcp_system.createActor(StopDriver)
    tcp_system.tell(driver, ("stop", server.address))
    wait_for(lambda: server.status().terminating)
    os.remove(tmp_path / "hang")
    fire(tcp_system, server, TimerKind.EXPORT)
    wait_for(lambda: process_gone(hung["pid"]))
    if sink is RecordingSink:  # retried through the normal flow, backoff included
        wait_state(server, State.RETRY_BACKOFF)
        fire(tcp_system, server, TimerKind.RETRY)
    wait_for(lambda: tcp_system.ask(driver, "stopped?", 5))
    assert delivered(tmp_path) == list(range(8))


def test_drain_on_terminate_gets_every_message(any_system: ActorSystem, tmp_path: Path) -> None:
    touch(tmp_path, "fail")
    server = start(any_system, tmp_path, sink=DrainingRecordingSink)
    server.send_messages(range(12))
    wait_state(server, State.RETRY_BACKOFF)  # Pachka itself would drop this failed batch
    server.stop()
    [drained] = calls(tmp_path, "drain_on_terminate")
    assert drained["batch"] == list(range(12))
    assert (drained["batch_size"], drained["server_value"]) == (5, "sv")
    assert calls(tmp_path, "send_batch") == []


def test_failed_drain_falls_back_to_send_batch(any_system: ActorSystem, tmp_path: Path) -> None:
    touch(tmp_path, "drain-fail")
    server = start(any_system, tmp_path, sink=DrainingRecordingSink)
    server.send_messages(range(7))
    server.stop()
    assert calls(tmp_path, "drain_on_terminate") == []
    assert delivered(tmp_path) == list(range(7))
    stats = server.stats()  # the failed drain took nothing
    assert (stats.drained, stats.exported, stats.lost) == (0, 7, 0)


@pytest.mark.parametrize("state", [State.IDLE, State.EXPORTING, State.RETRY_BACKOFF])
@pytest.mark.multiproc
def test_bare_exit_request_loses_nothing(tmp_path: Path, state: State) -> None:
    """`ActorSystem.shutdown()` without `stop()`: the server drains inside its exit handler."""
    touch(tmp_path, {State.EXPORTING: "block", State.RETRY_BACKOFF: "fail"}.get(state, "none"))
    with actor_system("multiprocTCPBase") as asys:
        server = start(asys, tmp_path, max_batch_size=4, sink=RecordingSink)
        server.send_messages(range(3 if state is State.IDLE else 10))
        wait_state(server, state)
        for name in ("block", "fail"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp_path / name)
    # The killed in-flight batch (EXPORTING) may arrive twice: at least once, and the
    # messages arrive in order the first time each is seen.
    sent = delivered(tmp_path)
    first_times = list(dict.fromkeys(sent))
    assert first_times == list(range(3 if state is State.IDLE else 10))
    assert len(sent) - len(first_times) <= (4 if state is State.EXPORTING else 0)


def test_multiproc_queue_base(queue_system: ActorSystem, tmp_path: Path) -> None:
    server = start(queue_system, tmp_path)
    assert server.send_messages(range(11)) == 11
    server.stop()
    assert delivered(tmp_path) == list(range(11))


# ---- stale events, names, the message API -----------------------------------------------------


def test_stale_timeouts_are_logged_not_fatal(simple_system: ActorSystem, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """Superseded timers are cancelled, so one that still comes is an anomaly: Pachka's
    WARNING (here fired by hand; real wakeups of a superseded timer never reach the core)."""
    server = start(simple_system, tmp_path)
    server.send_messages(range(3))
    batch_timer = server.status().timer
    assert batch_timer is not None
    server.send_messages(range(3, 5))  # a full batch: export starts, the batch timer is stale
    with caplog.at_level(logging.DEBUG, logger="pachka_actors"):
        simple_system.tell(server.address, FireTimer(batch_timer))
        simple_system.tell(server.address, FireTimer(Timer(TimerKind.RETRY, 10**9)))
        before = server.status()
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert any("batch timeout 1 received in wrong state" in w for w in warnings)
    assert any("retry timeout 1000000000 received in wrong state" in w for w in warnings)
    assert before.queue_length == 0 and server.status() == before
    server.stop()
    assert delivered(tmp_path) == list(range(5))


def test_superseded_wakeups_never_reach_the_core(simple_system: ActorSystem, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    server = start(simple_system, tmp_path, timers="wakeup", max_batch_delay=0.05)
    with caplog.at_level(logging.DEBUG, logger="pachka_actors"):
        for step in range(4):
            server.send_messages(range(step * 5, step * 5 + 3))  # arms the batch timer
            server.send_messages(range(step * 5 + 3, step * 5 + 5))  # supersedes it
        # Past every timer armed above (simple base fires wakeups during a later call).
        passed = time.monotonic() + 0.1
        wait_for(lambda: server.status().state is State.IDLE and time.monotonic() > passed)
    assert delivered(tmp_path) == list(range(20))
    assert [r.message for r in caplog.records if r.levelno >= logging.WARNING] == []
    server.stop()


def test_access_by_name(any_system: ActorSystem, tmp_path: Path) -> None:
    server = start(any_system, tmp_path, name="events")
    other = Pachka.connect(any_system, "events")
    assert other.address == server.address
    other.send_message("via name")
    with pytest.raises(AlreadyStarted):
        start(any_system, tmp_path, name="events")
    with pytest.raises(NotStarted):
        Pachka.connect(any_system, "nobody")
    server.stop()
    assert delivered(tmp_path) == ["via name"]


def test_message_api_for_actors(any_system: ActorSystem, tmp_path: Path) -> None:
    server = start(any_system, tmp_path, critical_queue_size=3)
    reply = any_system.ask(server.address, SendMessages([1, 2, 3, 4]), 10)
    assert (reply.count, reply.refused.terminating) == (3, False)
    server.stop()
    assert delivered(tmp_path) == [1, 2, 3]
