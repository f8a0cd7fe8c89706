"""The lingering handle: credits keep overload exact while messages travel in lists."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from sinks import StopDriver, delivered, wait_for
from support import start, touch
from thespian.actors import ActorSystem

from pachka_actors import Overloaded, Pachka
from pachka_actors._courier import Courier
from pachka_actors.config import DEFAULT_LINGER
from pachka_actors.messages import (
    Accepted,
    FireTimer,
    GetStatus,
    Granted,
    RequestCredit,
    SendMessages,
    State,
    Timer,
    TimerKind,
)
from pachka_actors.systems import session_pids


def test_linger_ships_without_another_call(tcp_system: ActorSystem, tmp_path: Path) -> None:
    server = start(tcp_system, tmp_path, max_batch_size=3, linger=0.01)
    for i in range(3):
        server.send_message(i)
    wait_for(lambda: delivered(tmp_path) == [0, 1, 2])  # no flush, status or stop needed
    server.stop()


def test_buffer_size_bounds_each_shipment(tcp_system: ActorSystem, tmp_path: Path) -> None:
    server = start(tcp_system, tmp_path, max_batch_size=1000, linger=3600, buffer_size=10)
    for i in range(25):
        server.send_message(i)
    status = server.status()  # ships the last, partial buffer first
    assert status.queue_length == 25 and status.reserved == 0
    server.stop()
    assert delivered(tmp_path) == list(range(25))


def test_overload_stays_exact_with_credits(tcp_system: ActorSystem, tmp_path: Path) -> None:
    touch(tmp_path, "block")
    server = start(tcp_system, tmp_path, critical_queue_size=10, buffer_size=4)
    accepted = 0
    with pytest.raises(Overloaded):
        for i in range(100):
            server.send_message(i)
            accepted += 1
    status = server.status()
    assert status.queue_length <= 10 and status.reserved == 0
    assert status.queue_length + status.batch_length == accepted
    assert accepted >= 10
    os.remove(tmp_path / "block")
    server.stop()
    assert delivered(tmp_path) == list(range(accepted))


def test_stop_waits_for_promised_messages(tcp_system: ActorSystem, tmp_path: Path) -> None:
    server = start(tcp_system, tmp_path)
    granted = tcp_system.ask(server.address, RequestCredit(3), 10)
    assert isinstance(granted, Granted) and granted.count == 3
    driver = tcp_system.createActor(StopDriver)
    tcp_system.tell(driver, ("stop", server.address))
    wait_for(lambda: server.status().terminating)
    assert server.status().state is State.IDLE  # waiting for the promised messages
    reply = tcp_system.ask(server.address, SendMessages(["a", "b"], granted.credit), 10)
    assert reply == Accepted(2)  # accepted while terminating: they were promised
    wait_for(lambda: tcp_system.ask(driver, "stopped?", 5))
    assert delivered(tmp_path) == ["a", "b"]


def test_unused_credit_expires(tcp_system: ActorSystem, tmp_path: Path) -> None:
    server = start(tcp_system, tmp_path, critical_queue_size=5)
    granted = tcp_system.ask(server.address, RequestCredit(5), 10)
    with pytest.raises(Overloaded):
        Pachka(tcp_system, server.address, linger=None).send_message("x")
    assert granted.credit is not None
    tcp_system.tell(server.address, FireTimer(Timer(TimerKind.CREDIT, granted.credit)))
    server.send_message("y")
    server.stop()
    assert delivered(tmp_path) == ["y"]


def test_simple_base_lingers_without_a_thread(simple_system: ActorSystem,
                                              tmp_path: Path) -> None:
    """Issue 8 direction 3: the buffer ships inline, at the first call after linger."""
    assert start(simple_system, tmp_path, name="default").linger == DEFAULT_LINGER
    server = start(simple_system, tmp_path, linger=3600, buffer_size=3)
    threads = threading.active_count()
    for i in range(4):  # the fourth needs new credit: the first three ship first
        server.send_message(i)
    assert threading.active_count() == threads
    seen = simple_system.ask(server.address, GetStatus(), 1)  # bypasses the handle's buffer
    assert seen.queue_length == 3 and seen.reserved == 3  # the 4th is buffered, under credit
    status = server.status()  # ships the fourth first
    assert status.queue_length == 4 and status.reserved == 0
    server.stop()
    assert delivered(tmp_path) == [0, 1, 2, 3]


@pytest.mark.multiproc
def test_interpreter_exit_ships_the_buffer(tmp_path: Path) -> None:
    tests = Path(__file__).parent
    result = subprocess.run([sys.executable, str(tests / "linger_exit.py"), str(tmp_path)],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": f"{tests}:{tests.parent}"})
    assert result.returncode == 0, result.stderr
    assert not session_pids(int(result.stdout.split()[0]))
    assert delivered(tmp_path) == [0, 1, 2]


def test_simple_base_shutdown_without_stop_drains(tmp_path: Path) -> None:
    """simpleSystemBase's `shutdown()` ends no actor (it sends them no ActorExitRequest),
    and nothing may hook it: the handle that started the server stops it, drained, at
    interpreter exit, so nothing accepted is lost (not even lingering)."""
    code = ("import sys; from pathlib import Path; from thespian.actors import ActorSystem\n"
            "from support import start\n"
            "asys = ActorSystem('simpleSystemBase', transientUnique=True)\n"
            "server = start(asys, Path(sys.argv[1]), max_batch_size=7)\n"
            "for i in range(30):\n"
            "    server.send_message(i)\n"
            "asys.shutdown()\n")
    tests = Path(__file__).parent
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": f"{tests}:{tests.parent}"})
    assert result.returncode == 0, result.stderr
    assert delivered(tmp_path) == list(range(30))


def test_each_shipment_asks_for_the_next_room(tcp_system: ActorSystem, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """One round trip per grant (issue 20): after the first request for room, each shipment
    of a used-up grant asks for the next, and its reply grants it; what `stop()` ships asks
    for nothing."""
    sent: list[Any] = []
    ask = Courier._ask

    def spy(courier: Courier, endpoint: ActorSystem, request: Any, *args: Any) -> Any:
        sent.append(request)
        return ask(courier, endpoint, request, *args)

    monkeypatch.setattr(Courier, "_ask", spy)
    server = start(tcp_system, tmp_path, max_batch_size=1000, linger=3600, buffer_size=10)
    for i in range(35):
        server.send_message(i)
    server.stop()
    ships = [r for r in sent if isinstance(r, SendMessages)]
    assert len([r for r in sent if isinstance(r, RequestCredit)]) == 1
    assert [(len(s.messages), s.ask) for s in ships] == [(10, 10), (10, 10), (10, 10), (5, 0)]
    assert delivered(tmp_path) == list(range(35))


def test_overload_stays_exact_when_shipments_ask_for_room(tcp_system: ActorSystem,
                                                           tmp_path: Path) -> None:
    """A shipment finding no room after it gets no grant and no refusal: the message that
    needs room asks, and only its refusal counts."""
    touch(tmp_path, "block")
    server = start(tcp_system, tmp_path, max_batch_size=5, critical_queue_size=20,
                   buffer_size=4, linger=3600)
    for i in range(25):  # 5 in flight + 20 queued
        server.send_message(i)
    with pytest.raises(Overloaded):
        server.send_message(25)
    status = server.status()
    assert (status.batch_length, status.queue_length, status.reserved) == (5, 20, 0)
    assert server.stats().refused_queue_full == 1
    os.remove(tmp_path / "block")
    server.stop()
    assert delivered(tmp_path) == list(range(25))
