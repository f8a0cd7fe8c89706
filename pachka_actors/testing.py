"""Helpers to test a sink and a producer without writing Thespian plumbing.

- `run_sink`: export messages in this process as a stopping server would (its
  own state machine decides), and report every attempt: a sink's logic, its
  failures, its `retry_timeout` answers and its dead letters, without any actor.
- `RecordingSink`: a sink that records every batch it gets in a directory, from
  whatever process exports it, and can fail its first attempts.
- `start_manual` and `fire`: a server whose timers fire only when the test says;
  `wait_for_timer` and `wait_for_state` wait for what a multi-process base
  does after the call that caused it returned.
- The pytest plugin (`pachka_actors.pytest_plugin`, loaded automatically once
  the package is installed) adds the `pachka_system` fixture: an isolated actor
  system that leaves no process behind.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from thespian.actors import ActorSystem

from ._exporters import SinkSession
from .config import PachkaConfig
from .core import (
    ArmRetryTimer,
    DeadLetters,
    ExportDone,
    MessagesReceived,
    PachkaCore,
    StartExport,
    StopRequested,
    TimerFired,
)
from .messages import FireTimer, ServerStatus, State, Timer, TimerKind
from .pachka import Pachka
from .sink import FailureReason, Sink, retry_delay


@dataclass(frozen=True)
class Attempt:
    """One export: the batch, its retry number (0 first), what came of it, and for a
    failure the delay `retry_timeout` asked for before the next try. A batch of
    isolated bad messages (`dead_letter`) is a `pachka_actors.core.DeadLetters`."""

    batch: list[Any]
    retry_num: int
    failure: FailureReason | None
    retry_delay: float | None = None


@dataclass
class SinkReport:
    attempts: list[Attempt] = field(default_factory=list)
    #: Batches the sink took, in order; those `dead_letter` took; and, if a batch still
    #: failed after `max_retries`, it and everything behind it, in order.
    delivered: list[list[Any]] = field(default_factory=list)
    dead_lettered: list[list[Any]] = field(default_factory=list)
    given_up: list[list[Any]] = field(default_factory=list)

    @property
    def messages(self) -> list[Any]:
        return [message for batch in self.delivered for message in batch]

    @property
    def failures(self) -> list[Attempt]:
        return [attempt for attempt in self.attempts if attempt.failure is not None]


def run_sink(sink: Sink | type[Sink], messages: Iterable[Any], *, max_batch_size: int = 500,
             server_value: Any = None, max_retries: int = 3) -> SinkReport:
    """Export `messages` through `sink` in this process, driven by the server's own state
    machine: the same batches, retries, splitting of batches that fail with
    `PermanentSinkError`, and dead letters as a stopping server would export.

    The sink is validated and pickled as `Pachka.start` would (so a sink that
    cannot cross processes fails here too). A failed batch is retried at once;
    the delay `retry_timeout` answers is recorded, not waited for. A server
    retries for ever, holding back the batches behind; here, once a batch has
    failed `max_retries` retries, the run ends and `given_up` holds what was left.
    Each attempt runs the sink's `setup` and `teardown` around it, as the default
    one exporter per batch does.
    """
    config = PachkaConfig.parse({"sink": sink, "max_batch_size": max_batch_size,
                                 "server_value": server_value})
    exported: Sink = pickle.loads(pickle.dumps(config.sink))
    queued = list(messages)
    core = PachkaCore(max_batch_size=max_batch_size, critical_queue_size=len(queued) + 1,
                      max_batch_delay=None, export_timeout=None, drains=False,
                      batch_prefix="run-")
    report = SinkReport()
    effects = core.handle(MessagesReceived(queued)) + core.handle(StopRequested())
    while effects:
        match effects.pop(0):
            case StartExport(export_id, batch, retry_num):
                session = SinkSession(exported, server_value)
                failure = session.export(export_id, batch).failure
                session.close()
                report.attempts.append(Attempt(batch, retry_num, failure))
                if failure is None:
                    kept = report.dead_lettered if isinstance(batch, DeadLetters) else (
                        report.delivered)
                    kept.append(list(batch))
                effects += core.handle(ExportDone(export_id, failure))
            case ArmRetryTimer(timer, retry_num, failure):
                attempt = report.attempts.pop()
                report.attempts.append(replace(attempt, retry_delay=retry_delay(
                    exported, retry_num, failure, server_value)))
                if retry_num > max_retries:
                    report.given_up = [list(core.batch), *map(list, core.pending)]
                    report.given_up += [queued[i:i + max_batch_size] for i in range(
                        len(queued) - len(core.queue), len(queued), max_batch_size)]
                    break
                effects += core.handle(TimerFired(timer))
    return report


class RecordingSink(Sink):
    """Records each batch it takes as a file in `directory`, from any process.

    `fail_first`: the first N attempts (counted across processes) fail with
    `ConnectionError`, so retries can be tested. `retry_seconds` is what
    `retry_timeout` answers. Messages must be picklable (they are anyway on
    multi-process bases).
    """

    def __init__(self, directory: str | os.PathLike[str], *, fail_first: int = 0,
                 retry_seconds: float = 0.0) -> None:
        self.directory = str(directory)
        self.fail_first = fail_first
        self.retry_seconds = retry_seconds
        os.makedirs(self.directory, exist_ok=True)

    def send_batch(self, messages: list[Any], server_value: Any) -> BaseException | None:
        attempt = _claim(Path(self.directory), "attempt")
        if attempt < self.fail_first:
            return ConnectionError(f"RecordingSink: attempt {attempt + 1} of the first "
                                   f"{self.fail_first} fails by request")
        _write(Path(self.directory), "batch", messages)
        return None

    def retry_timeout(self, retry_num: int, failure_reason: FailureReason,
                      server_value: Any) -> float:
        return self.retry_seconds

    def batches(self) -> list[list[Any]]:
        """Every batch written so far, in the order taken (a batch still being written
        is not there yet: it appears whole, under its final name, or not at all)."""
        return [pickle.loads(path.read_bytes()) for path in _numbered(Path(self.directory),
                                                                       "batch")]

    def messages(self) -> list[Any]:
        return [message for batch in self.batches() for message in batch]

    def attempts(self) -> int:
        return len(_numbered(Path(self.directory), ".attempt"))


def _claim(directory: Path, kind: str) -> int:
    """The next number of `kind` in `directory`, taken atomically (O_EXCL) across processes,
    under a hidden name: readers of `kind-*` files see only written ones (`_write`)."""
    number = len(_numbered(directory, f".{kind}"))
    while True:
        try:
            fd = os.open(directory / f".{kind}-{number:09d}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            number += 1
            continue
        os.close(fd)
        return number


def _write(directory: Path, kind: str, value: Any) -> None:
    number = _claim(directory, kind)
    temporary = directory / f".{kind}-{number:09d}.tmp"
    temporary.write_bytes(pickle.dumps(value))
    temporary.replace(directory / f"{kind}-{number:09d}")  # readers never see half a batch


def _numbered(directory: Path, kind: str) -> Sequence[Path]:
    """The files `kind-NNNNNNNNN`, in number order (a claim's `.tmp` file is not one)."""
    return sorted(directory.glob(f"{kind}-[0-9]*[0-9]"))


def start_manual(system: ActorSystem, sink: Sink | type[Sink], **options: Any) -> Pachka:
    """`Pachka.start` with `timers="manual"`: no timer goes off until `fire` says so."""
    return Pachka.start(system=system, sink=sink, timers="manual", **options)


#: Seconds between two looks at the server while waiting for a timer or a state.
POLL = 0.01


def fire(server: Pachka, kind: TimerKind | str, *, wait: float = 0.0) -> None:
    """Fire the server's running timer, which must be of `kind` ("batch", "export", "retry").

    `wait` (seconds): wait up to that long for such a timer (`wait_for_timer`).
    On a multi-process base some timers are armed after the call that caused
    them returned (the retry timer once the failed export's result reached the
    server), so `fire(server, "retry", wait=5)` right after a failing export.
    Raises AssertionError naming the state and the timer it saw instead: a
    test that expects a timer that is not there is wrong, and should say so.
    """
    timer = wait_for_timer(server, kind, wait)
    server.system.tell(server.address, FireTimer(timer))


def wait_for_timer(server: Pachka, kind: TimerKind | str, timeout: float = 5.0) -> Timer:
    """The server's running timer once it is of `kind`, polling `status()` up to `timeout`
    seconds (0: one look); AssertionError naming the state and timer seen otherwise."""
    kind = TimerKind(kind)
    status = _poll(server, lambda status: status.timer is not None
                   and status.timer.kind is kind, f"no {kind.value} timer runs", timeout)
    assert status.timer is not None
    return status.timer


def wait_for_state(server: Pachka, state: State | str, timeout: float = 5.0) -> ServerStatus:
    """The server's status once it is in `state`, polling `status()` up to `timeout` seconds;
    AssertionError naming the state and timer seen otherwise."""
    state = State(state)
    return _poll(server, lambda status: status.state is state,
                 f"the server is not {state.value}", timeout)


def _poll(server: Pachka, reached: Callable[[ServerStatus], bool], failure: str,
          timeout: float) -> ServerStatus:
    deadline = time.monotonic() + timeout
    while not reached(status := server.status()):
        if time.monotonic() >= deadline:
            waited = f" after {timeout} s" if timeout else ""
            raise AssertionError(f"{failure}{waited} (state: {status.state.value}, "
                                 f"running timer: {status.timer})")
        time.sleep(POLL)
    return status
