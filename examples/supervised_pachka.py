"""Pachka under a supervisor, in the order Pachka's docs prescribe (see docs/supervision.md).

    1. the sink system: `Repo`, a stand-in for a database (a directory that is
       "open" while the file `open` exists in it);
    2. the Pachka server, whose sink writes into the repo;
    3. a message producer: `UserTracker`, which numbers events and feeds them to
       the Pachka server.

The supervisor starts them in this order and stops them in reverse: the producer
first, then the Pachka server, which drains every message it accepted into the
repo (with its one-second batch delay, most of them), and the repo last. The
sink refuses to write into a closed repo, so a message drained too late would
show as an error, and a missing one as a gap.

Run it with `python examples/supervised_pachka.py`; tests/test_supervisor_pachka.py
runs `run` and checks its report.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from thespian.actors import (
    Actor,
    ActorAddress,
    ActorExitRequest,
    ActorSystem,
    WakeupMessage,
)

from pachka_actors import ChildSpec, Pachka, Sink, Supervisor
from pachka_actors.messages import Accepted, SendMessages, WhichChildren
from pachka_actors.systems import isolated_system


def note(directory: str, **entry: Any) -> None:
    """Append one line to the example's journal (the actors run in other processes)."""
    with open(os.path.join(directory, "journal.jsonl"), "a") as journal:
        journal.write(json.dumps(entry) + "\n")


def journal(directory: str) -> list[dict[str, Any]]:
    path = os.path.join(directory, "journal.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


# ---- 1. the sink system ------------------------------------------------------------------


@dataclass(frozen=True)
class OpenRepo:
    directory: str


class Repo(Actor):  # type: ignore[misc]
    """Opens the store when started (its init message), closes it when stopped."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, OpenRepo):
            self.directory = message.directory
            Path(self.directory, "open").touch()
            note(self.directory, event="repo opened")
            self.send(sender, "opened")
        elif isinstance(message, ActorExitRequest):
            os.remove(os.path.join(self.directory, "open"))
            note(self.directory, event="repo closed")


class RepoSink(Sink):
    """Pachka's sink: writes each batch into the repo, and fails while the repo is closed."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        if not os.path.exists(os.path.join(self.directory, "open")):
            note(self.directory, event="write refused: repo closed", batch=messages)
            raise ConnectionError("the repo is closed")
        note(self.directory, event="stored", batch=messages)


# ---- 3. a producer -----------------------------------------------------------------------


@dataclass(frozen=True)
class Track:
    directory: str
    report_at: int  # note in the journal when this many events are accepted
    batch_size: int = 20
    every: float = 0.005


class UserTracker(Actor):  # type: ignore[misc]
    """Sends numbered events to the Pachka server, one list in flight at a time.

    It finds the server by asking its supervisor (the sender of its init message)
    `WhichChildren`; the supervisor answers once it has started every child.
    """

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, Track):
            self.track, self.accepted, self.in_flight = message, 0, 0
            note(message.directory, event="tracker started")
            self.send(sender, "tracking")
            self.send(sender, WhichChildren())
        elif isinstance(message, list):  # the supervisor's answer
            self.pachka = next(address for id, address, _ in message if id == "pachka")
            self.produce()
        elif isinstance(message, Accepted):
            if self.accepted < self.track.report_at <= self.accepted + message.count:
                note(self.track.directory, event="tracker busy")
            self.accepted += message.count  # the rest, if refused, is sent again
            self.in_flight = 0
            self.wakeupAfter(timedelta(seconds=self.track.every))
        elif isinstance(message, WakeupMessage):
            self.produce()
        elif isinstance(message, ActorExitRequest):
            note(self.track.directory, event="tracker stopped", accepted=self.accepted,
                 in_flight=self.in_flight)

    def produce(self) -> None:
        self.in_flight = self.track.batch_size
        self.send(self.pachka, SendMessages(list(range(self.accepted,
                                                       self.accepted + self.in_flight))))


# ---- the supervision tree ----------------------------------------------------------------


def children(directory: str, events: int) -> list[ChildSpec]:
    """Elixir's `[MyApp.Repo, {Pachka, name: MyPachka, sink: ...}, MyApp.UserTracker]`."""
    return [
        ChildSpec("repo", (Repo, OpenRepo(directory))),  # 1. the sink system
        Pachka.child_spec(id="pachka", sink=RepoSink(directory),  # 2. the Pachka server
                          max_batch_size=1000, max_batch_delay=1.0),
        ChildSpec("user_tracker", (UserTracker, Track(directory, events))),  # 3. the producer
    ]


def run(system: ActorSystem, directory: str, events: int = 1000) -> list[dict[str, Any]]:
    """Start the tree, stop it once the producer has `events` events accepted; the journal."""
    supervisor = Supervisor.start(children(directory, events), system=system)
    deadline = time.monotonic() + 30
    while not any(e["event"] == "tracker busy" for e in journal(directory)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {events} events accepted within 30 s")
        time.sleep(0.01)
    supervisor.stop()
    return journal(directory)


def main() -> None:
    with isolated_system() as system, tempfile.TemporaryDirectory() as directory:
        entries = run(system, directory)
    stored = [m for e in entries if e["event"] == "stored" for m in e["batch"]]
    stopped = next(e for e in entries if e["event"] == "tracker stopped")
    print(f"accepted {stopped['accepted']} events (+{stopped['in_flight']} in flight at stop), "
          f"stored {len(stored)}, in order: {stored == list(range(len(stored)))}")
    for entry in entries:
        print(entry["event"], f"{len(entry['batch'])} events" if "batch" in entry else "")


if __name__ == "__main__":
    main()
