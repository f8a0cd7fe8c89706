"""Replies matched to requests: a late reply never answers a later request (issue 11 point 4)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sinks import RecordingSink, delivered, wait_for
from support import start, touch
from thespian.actors import Actor, ActorAddress, ActorExitRequest, ActorSystem

from pachka_actors import ActorTimeout, Pachka, _ask
from pachka_actors._ask import ask
from pachka_actors._base import private_endpoint
from pachka_actors.errors import ActorGone
from pachka_actors.messages import ServerStatus, State, Stop, Stopped


def test_late_stopped_does_not_answer_a_later_start(tcp_system: ActorSystem,
                                                     tmp_path: Path) -> None:
    touch(tmp_path, "block")
    server = start(tcp_system, tmp_path, timers="wakeup", max_batch_size=1, linger=None)
    server.send_message("held")
    wait_for(lambda: server.status().state is State.EXPORTING)
    # On the system's own endpoint: the Stopped for this request comes late, to that endpoint.
    with pytest.raises(ActorTimeout):
        ask(tcp_system, server.address, Stop(), Stopped, 0.3)
    os.remove(tmp_path / "block")
    wait_for(lambda: delivered(tmp_path) == ["held"])
    other = Pachka.start(system=tcp_system, sink=RecordingSink(tmp_path), name="other",
                         linger=None)
    assert isinstance(other.status(), ServerStatus)  # not "unexpected reply: Stopped()"
    other.stop()


def test_late_reply_after_timed_out_stop(tcp_system: ActorSystem, tmp_path: Path) -> None:
    touch(tmp_path, "block")
    server = start(tcp_system, tmp_path, timers="wakeup", max_batch_size=1)
    server.send_message("held")
    wait_for(lambda: server.status().state is State.EXPORTING)
    with pytest.raises(ActorTimeout):
        server.stop(timeout=0.3)
    os.remove(tmp_path / "block")
    (tmp_path / "other").mkdir()
    other = Pachka.start(system=tcp_system, sink=RecordingSink(tmp_path / "other"), name="other")
    other.send_message("next")
    other.stop()
    assert delivered(tmp_path) == ["held"]
    assert delivered(tmp_path / "other") == ["next"]



class Silent(Actor):  # type: ignore[misc]
    """Answers nothing: a request to it can only time out, or end when it exits."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        pass


def test_a_silent_actor_that_is_there_keeps_the_wait(tcp_system: ActorSystem,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Probes answered by Thespian for a live actor never end a wait early."""
    monkeypatch.setattr(_ask, "PROBE_AFTER", 0.2)
    silent = tcp_system.createActor(Silent)
    began = time.monotonic()
    with pytest.raises(ActorTimeout) as error:
        ask(tcp_system, silent, "anyone?", str, 1.5)
    assert not isinstance(error.value, ActorGone)
    assert time.monotonic() - began >= 1.5


class SlowToExit(Actor):  # type: ignore[misc]
    """Greets whoever it is sent, and takes a second to exit: its parent waits for it."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, ActorAddress):
            self.send(message, "ready")
        elif isinstance(message, ActorExitRequest):
            time.sleep(1.0)


class Parent(Actor):  # type: ignore[misc]
    """Has a child that is slow to exit; answers nothing itself."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if message == "child":
            self.send(self.createActor(SlowToExit), sender)


def test_a_request_dropped_by_an_exiting_actor_ends_the_wait(
        tcp_system: ActorSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 8's hang: while an actor waits for its children to exit, Thespian drops
    every other message it receives, silently. A wait with no timeout for the answer
    must end once the actor is gone (before: for ever, as a second `stop()` did)."""
    monkeypatch.setattr(_ask, "PROBE_AFTER", 0.2)
    parent = tcp_system.createActor(Parent)
    assert tcp_system.ask(parent, "child", 10) == "ready"
    outcome: list[BaseException] = []

    def wait() -> None:
        with private_endpoint(tcp_system) as endpoint:
            endpoint.tell(parent, ActorExitRequest())
            try:  # from the same endpoint, so it arrives after the exit request
                ask(endpoint, parent, "anyone?", str, None)
            except BaseException as exc:
                outcome.append(exc)

    waiting = threading.Thread(target=wait, daemon=True)
    waiting.start()
    waiting.join(10)
    assert not waiting.is_alive(), "the wait goes on for an actor that is gone"
    assert isinstance(outcome[0], ActorGone)  # public, and still an ActorTimeout
