"""The handle at its edges (issue 11): bad messages, threads, crashes, stopped servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sinks import RecordingSink, calls, delivered, wait_for
from support import actor_system, process_gone, start, touch
from thespian.actors import ActorSystem

from pachka_actors import ActorTimeout, MessagesLost, Overloaded, Pachka, PachkaError
from pachka_actors._courier import Courier
from pachka_actors.errors import NotStarted, UnpicklableMessage
from pachka_actors.messages import State
from pachka_actors.systems import RECORDS, SystemRecord, free_port


@pytest.fixture(params=["multiprocTCPBase", "multiprocQueueBase"])
def multiproc_system(request: pytest.FixtureRequest) -> Iterator[ActorSystem]:
    with actor_system(request.param) as asys:
        yield asys


# ---- point 1: one unpicklable message ------------------------------------------------------


def test_unpicklable_message_is_refused_at_its_call(multiproc_system: ActorSystem,
                                                    tmp_path: Path) -> None:
    server = start(multiproc_system, tmp_path, credit_timeout=30, max_batch_size=50)
    for i in range(100):
        server.send_message(i)
    with pytest.raises(UnpicklableMessage, match="lock") as error:
        server.send_message(threading.Lock())
    assert isinstance(error.value, TypeError) and isinstance(error.value, PachkaError)
    for i in range(100, 200):
        server.send_message(i)
    began = time.monotonic()
    server.stop()  # no credit stranded: no wait for credit_timeout (30 s)
    assert time.monotonic() - began < 10
    assert delivered(tmp_path) == list(range(200))


def test_unpicklable_item_of_send_messages_is_named(tcp_system: ActorSystem,
                                                     tmp_path: Path) -> None:
    server = start(tcp_system, tmp_path)
    with pytest.raises(UnpicklableMessage, match="message 1, a lock, does not pickle") as error:
        server.send_messages([1, threading.Lock(), 3])
    assert "none of the 3 was queued" in str(error.value)
    assert server.send_messages([4, 5]) == 2  # the handle works on
    server.stop()
    assert delivered(tmp_path) == [4, 5]


@pytest.fixture
def late() -> Iterator[type]:
    """A class the server's process cannot load: its module exists only in this process,
    made after the system started (as a class defined in __main__ then would be)."""
    module = types.ModuleType("late_module")
    sys.modules["late_module"] = module
    exec("class Late:\n    pass\n", module.__dict__)
    yield module.Late
    del sys.modules["late_module"]


def buffer_with(server: Pachka, late: type) -> None:
    for message in [1, late(), 2]:
        server.send_message(message)  # it pickles here: accepted into the buffer


def test_message_the_server_cannot_load_costs_only_itself(tcp_system: ActorSystem,
                                                          tmp_path: Path, late: type) -> None:
    server = start(tcp_system, tmp_path, linger=3600, credit_timeout=30)
    buffer_with(server, late)
    with pytest.raises(MessagesLost, match="message 1, a Late, cannot be loaded") as lost:
        server.flush()  # dropped alone: the others were shipped
    assert lost.value.count == 1
    with pytest.raises(UnpicklableMessage, match="message 1, a Late, cannot be loaded"):
        server.send_messages([3, late(), 4])
    unbuffered = Pachka.connect(tcp_system, server.address, linger=None)
    with pytest.raises(UnpicklableMessage, match="message 0, a Late, cannot be loaded"):
        unbuffered.send_message(late())
    server.send_message(5)
    began = time.monotonic()
    with pytest.raises(MessagesLost) as again:
        server.stop()  # stops, then says it again: a program may check only stop()
    assert again.value.count == 1
    assert time.monotonic() - began < 10  # the grant was closed by the good ones
    assert delivered(tmp_path) == [1, 2, 5]


def test_message_spoiled_after_its_call_costs_only_itself(tcp_system: ActorSystem,
                                                          tmp_path: Path) -> None:
    server = start(tcp_system, tmp_path, linger=3600, credit_timeout=30)
    box: list[Any] = []
    server.send_message("before")
    server.send_message(box)  # pickles now...
    server.send_message("after")
    box.append(threading.Lock())  # ...but no longer when the buffer ships
    with pytest.raises(MessagesLost, match="message 1, a list, does not pickle"):
        server.flush()
    began = time.monotonic()
    with pytest.raises(MessagesLost):
        server.stop()
    assert time.monotonic() - began < 10  # the grant was closed by the others' shipment
    assert delivered(tmp_path) == ["before", "after"]


# ---- point 3: simpleSystemBase waits for its timers ----------------------------------------


def test_simple_stop_waits_for_a_pending_retry(simple_system: ActorSystem,
                                               tmp_path: Path) -> None:
    touch(tmp_path, "fail")
    server = Pachka.start(system=simple_system, sink=RecordingSink(tmp_path, retry_seconds=0.3),
                          max_batch_size=1)
    server.send_message("a")
    wait_for(lambda: server.status().state is State.RETRY_BACKOFF)  # retry 0.3 s away
    os.remove(tmp_path / "fail")
    server.stop()  # was: ActorTimeout at once
    assert delivered(tmp_path) == ["a"]


def test_simple_call_that_can_never_be_answered_fails_at_once(simple_system: ActorSystem,
                                                              tmp_path: Path) -> None:
    touch(tmp_path, "fail")
    server = start(simple_system, tmp_path, max_batch_size=1)  # manual timers: none will fire
    server.send_message("a")
    began = time.monotonic()
    with pytest.raises(ActorTimeout, match="nothing runs before then"):
        server.stop()  # timeout None: would otherwise wait for ever
    assert time.monotonic() - began < 5


# ---- point 10: overload as exact as Pachka's ------------------------------------------------


def test_overload_exact_one_by_one(tcp_system: ActorSystem, tmp_path: Path) -> None:
    touch(tmp_path, "block")
    server = start(tcp_system, tmp_path, max_batch_size=5, critical_queue_size=20)
    for i in range(25):  # 5 in flight + 20 queued, as Pachka accepts them
        server.send_message(i)
    with pytest.raises(Overloaded) as error:
        server.send_message(25)
    assert not error.value.terminating
    status = server.status()
    assert (status.batch_length, status.queue_length, status.reserved) == (5, 20, 0)
    os.remove(tmp_path / "block")
    server.stop()
    assert delivered(tmp_path) == list(range(25))


# ---- point 17: the courier thread cannot lose messages or hang calls ------------------------


def test_courier_crash_keeps_messages(tcp_system: ActorSystem, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    server = start(tcp_system, tmp_path, linger=3600)
    for i in range(10):
        server.send_message(i)
    ship = Courier._ship
    crashes: list[int] = []

    def crash_once(self: Courier, endpoint: ActorSystem, shipment: Any) -> None:
        if not crashes:
            crashes.append(1)
            raise SystemExit("injected")  # not an Exception: ends the thread
        return ship(self, endpoint, shipment)

    monkeypatch.setattr(Courier, "_ship", crash_once)
    with pytest.raises(PachkaError, match=r"courier thread .* failed.*messages were kept"):
        server.flush()
    for i in range(10, 20):
        server.send_message(i)
    server.stop()  # a new thread ships what the crashed one held
    assert delivered(tmp_path) == list(range(20))


def test_flush_has_a_timeout(tcp_system: ActorSystem, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    server = start(tcp_system, tmp_path, linger=3600)
    server.send_message("a")
    release = threading.Event()
    ship = Courier._ship

    def stuck(self: Courier, endpoint: ActorSystem, shipment: Any) -> None:
        release.wait(30)
        return ship(self, endpoint, shipment)

    monkeypatch.setattr(Courier, "_ship", stuck)
    began = time.monotonic()
    with pytest.raises(ActorTimeout, match="1 messages wait"):
        server.flush(timeout=0.3)
    assert time.monotonic() - began < 3
    release.set()
    server.stop()
    assert delivered(tmp_path) == ["a"]


# ---- point 18: several producing threads ----------------------------------------------------


@pytest.mark.parametrize("shared", [True, False], ids=["shared-handle", "handle-per-thread"])
def test_threads_produce(multiproc_system: ActorSystem, tmp_path: Path, shared: bool) -> None:
    server = start(multiproc_system, tmp_path, max_batch_size=200, timers="wakeup",
                   max_batch_delay=0.05, buffer_size=100)
    per_thread, errors = 1500, []

    def produce(t: int) -> None:
        try:
            handle = server if shared else Pachka.connect(multiproc_system, server.address)
            for i in range(per_thread):
                handle.send_message(t * 100_000 + i)
            handle.flush()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    server.stop()
    got = delivered(tmp_path)
    assert sorted(got) == sorted(t * 100_000 + i for t in range(4) for i in range(per_thread))
    for t in range(4):  # each thread's messages in its order
        assert [m for m in got if m // 100_000 == t] == [t * 100_000 + i
                                                         for i in range(per_thread)]


def test_handle_on_a_private_endpoint(tcp_system: ActorSystem, tmp_path: Path) -> None:
    server = start(tcp_system, tmp_path)
    with tcp_system.private() as endpoint:  # was: 'BaseContext' has no 'external_clone'
        private = Pachka.connect(endpoint, server.address)
        for i in range(100):
            private.send_message(i)
        done = threading.Thread(target=private.close)
        done.start()
        done.join(20)
        assert not done.is_alive()
    server.stop()
    assert delivered(tmp_path) == list(range(100))


def test_wait_for_is_available() -> None:
    assert wait_for(lambda: 1) == 1


# ---- point 7: a stopped server answers at once ----------------------------------------------


def test_stopped_server_answers_at_once(multiproc_system: ActorSystem, tmp_path: Path) -> None:
    server = start(multiproc_system, tmp_path, ask_timeout=30)
    server.send_message("a")
    server.stop()
    began = time.monotonic()
    server.stop()  # a no-op
    with pytest.raises(Overloaded) as error:
        server.send_message("b")
    assert error.value.terminating and "stopped" in str(error.value)
    assert server.send_messages(["c"]) == 0
    assert time.monotonic() - began < 1
    assert delivered(tmp_path) == ["a"]


def test_server_stopped_elsewhere_answers_at_once(tcp_system: ActorSystem,
                                                  tmp_path: Path) -> None:
    """TCP tells an exited actor's address from a slow one within milliseconds."""
    server = start(tcp_system, tmp_path, ask_timeout=30)
    other = Pachka.connect(tcp_system, server.address, linger=None)
    server.stop()
    began = time.monotonic()
    with pytest.raises(Overloaded) as error:
        other.send_message("late")
    assert error.value.terminating  # "gone", or "terminating" if it has not quite exited yet
    other.stop()  # a no-op: it has exited
    assert time.monotonic() - began < 5
    lingering = Pachka.connect(tcp_system, server.address)
    with pytest.raises(Overloaded):
        lingering.send_message("late")  # its credit request finds no one
    assert time.monotonic() - began < 5


# ---- issue 17: what the handle accepted is delivered, or its loss reported -----------------


def shut_down_elsewhere(port: int) -> None:
    """Another program shuts the actor system down, as `asys.shutdown()` there would."""
    code = ("from thespian.actors import ActorSystem; "
            f"ActorSystem('multiprocTCPBase', {{'Admin Port': {port}}}).shutdown()")
    with open(os.devnull, "w") as out:
        subprocess.run([sys.executable, "-c", code], stdout=out, stderr=out, timeout=30,
                       check=True)


def test_a_server_shut_down_elsewhere_gets_what_was_buffered(tmp_path: Path) -> None:
    """17.3: another program's `shutdown()` makes the server exit; it tells this handle over
    its link, which ships there what it holds (before: lost, with no count)."""
    port = free_port()
    with actor_system("multiprocTCPBase", {"Admin Port": port}) as asys:
        server = start(asys, tmp_path, linger=3600, buffer_size=100)
        for i in range(5):
            server.send_message(i)  # buffered under the server's credit
        shut_down_elsewhere(port)
        assert delivered(tmp_path) == list(range(5))
        with pytest.raises(NotStarted, match="ended"):
            server.status()
        server.stop()  # stopped elsewhere, nothing lost: nothing to say


def test_messages_lost_with_a_killed_server(tmp_path: Path) -> None:
    """17.3: the next call and `stop()` say how many accepted messages are lost (before:
    `Overloaded: ... is gone` with no count, or a private error, and `stop()` returned)."""
    with actor_system("multiprocTCPBase") as asys:
        server = start(asys, tmp_path, linger=3600, buffer_size=100, max_batch_size=1)
        assert server.send_messages([-1]) == 1
        [pid] = wait_for(lambda: {c["ppid"] for c in calls(tmp_path, "send_batch")})
        for i in range(5):
            server.send_message(i)  # buffered under the server's credit
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: process_gone(pid))
        with pytest.raises(MessagesLost) as lost:
            server.status()
        assert lost.value.count == 5
        with pytest.raises(MessagesLost) as again:
            server.stop()  # said again: a program may check only stop()
        assert again.value.count == 5


def test_stop_after_a_refused_shipment_stops_then_reports(tcp_system: ActorSystem,
                                                          tmp_path: Path, late: type) -> None:
    """17.4: a shipment problem found by `stop()` does not make it stop nothing (before:
    "reported by this later call, which did nothing", and the server ran on)."""
    server = start(tcp_system, tmp_path, linger=3600, credit_timeout=30)
    buffer_with(server, late)
    with pytest.raises(MessagesLost, match="cannot be loaded") as lost:
        server.stop()
    assert lost.value.count == 1
    assert delivered(tmp_path) == [1, 2]  # stopped: the rest delivered
    with pytest.raises(NotStarted):
        Pachka.connect(tcp_system, server.address, linger=None).status()  # the server is gone


@pytest.mark.multiproc
def test_ctrl_c_while_waiting_for_room_lets_stop_return_promptly(tmp_path: Path) -> None:
    """17.5: the grant that answers an interrupted wait is not left open at the server
    (before: `stop()` waited for it to expire, `credit_timeout`, 30 s here)."""
    touch(tmp_path, "block")
    tests = Path(__file__).parent
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        child = subprocess.Popen([sys.executable, str(tests / "interrupt_wait.py"),
                                  str(tmp_path)], stdout=out, stderr=err,
                                 env={**os.environ, "PYTHONPATH": f"{tests}:{tests.parent}"})
    try:
        wait_for(lambda: (tmp_path / "waiting").exists() or child.poll() is not None, 30)
        time.sleep(0.5)  # into the wait (were it not, the request would not be asked at all)
        child.send_signal(signal.SIGINT)
        wait_for(lambda: (tmp_path / "stopping").exists() or child.poll() is not None, 10)
        os.remove(tmp_path / "block")  # room frees: the server grants the given-up request
        assert child.wait(90) == 0, (tmp_path / "err").read_text()
    finally:
        if child.poll() is None:
            child.kill()
    sid, took = (tmp_path / "out").read_text().split()
    RECORDS.append(SystemRecord("of a child process", int(sid)))
    assert float(took) < 10, (tmp_path / "err").read_text()
    assert delivered(tmp_path) == [0, 1, 2, 3]
