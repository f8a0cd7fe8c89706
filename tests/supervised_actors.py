"""Actors for the supervisor tests; module-level so that they pickle into actor processes.

They report through the sinks' file log (`<directory>/log.jsonl`, read with
`sinks.calls`), since they run in other processes: every entry carries the pid.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from sinks import RecordingSink
from thespian.actors import Actor, ActorAddress, ActorExitRequest

from pachka_actors._base import child_pid
from pachka_actors.messages import NormalExit


@dataclass(frozen=True)
class Init:
    """A `Worker`'s init message. `fail`: answer it with an exception (also while a file
    `<name>-fails` exists in `directory`); `stuck`: never return from the ActorExitRequest
    handler; `spawn`: start a child of its own; `linger`: keep its process alive after the
    actor exited, until a file `<name>-release` exists (a non-daemon thread)."""

    directory: str
    name: str
    fail: bool = False
    stuck: bool = False
    spawn: bool = False
    linger: bool = False


@dataclass(frozen=True)
class Halt:
    """A custom stop message (`ChildSpec.stop_message`)."""


class Worker(Actor):  # type: ignore[misc]
    """Logs start, stop and halt; "exit-normally" makes it send NormalExit to its supervisor."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, Init):
            self.init = message
            self.supervisor = sender
            log = RecordingSink(message.directory)
            grandchild = None
            if message.spawn:
                grandchild = child_pid(self, self.createActor(Plain))
            if message.linger:
                release = os.path.join(message.directory, f"{message.name}-release")
                threading.Thread(target=_wait_for_file, args=(release,)).start()
            log.record(call="start", name=message.name, grandchild=grandchild)
            fail = message.fail or os.path.exists(
                os.path.join(message.directory, f"{message.name}-fails"))
            self.send(sender, RuntimeError(f"{message.name} refuses") if fail else "started")
        elif isinstance(message, ActorExitRequest):
            RecordingSink(self.init.directory).record(call="stop", name=self.init.name)
            while self.init.stuck:
                time.sleep(1)
        elif isinstance(message, Halt):
            RecordingSink(self.init.directory).record(call="halt", name=self.init.name)
            self.send(self.myAddress, ActorExitRequest())
        elif message == "exit-normally":
            self.send(self.supervisor, NormalExit())
        elif message == "hang":
            while True:
                time.sleep(1)


def _wait_for_file(path: str) -> None:
    """Keeps the process alive (a non-daemon thread) until `path` exists, at most a minute."""
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)


class Plain(Actor):  # type: ignore[misc]
    """A child without init message; tells its pid."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if message == "pid":
            self.send(sender, os.getpid())


class Relay(Actor):  # type: ignore[misc]
    """An ordinary actor using a supervisor by message: `("via", supervisor, request)`
    sends the request; the reply goes back to whoever asked the relay."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, tuple) and message[0] == "via":
            self.asker = sender
            self.send(message[1], message[2])
        else:
            self.send(self.asker, message)
