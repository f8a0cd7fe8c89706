"""Exporters: each runs its sink's `setup`, then `send_batch` for one batch (or several
in turn, `batches_per_exporter`), in its own process where the base allows, so that a
hung or crashing sink can be killed without touching the server.

`ExporterPool` owns them for one server: exporter actors, the spare created ahead
of need, the idle one kept for the next batch, their process ids, kills, abandoned
ones, and the exports run while the server exits and can receive nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import multiprocessing
import os
import pickle
import select
import signal
import threading
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from thespian.actors import Actor, ActorAddress, ActorExitRequest

from ._process_old import ProcessId, die_with_parent
from ._thespian import (
    child_process,
    exit_children,
    forget_dead_children,
    notices_exits_at_once,
)
from .core import ExportFinished
from .errors import SinkError
from .sink import EXITED, Sink

log = logging.getLogger(__name__)


@dataclass(frozen=True, repr=False)
class Prepare:
    """The first message to a new exporter: its sink, whose `setup` it runs at once, as a
    spare. `report`: the server could not see its process at creation (ExporterStarted)."""

    exporter_id: int
    sink: Sink
    server_value: Any
    report: bool

    def __repr__(self) -> str:
        return f"Prepare(exporter {self.exporter_id})"


#: Seconds an idle exporter gets at the server's exit to run `teardown` before SIGKILL.
TEARDOWN_GRACE = 3.0


@dataclass(frozen=True, repr=False)
class ExportBatch:
    export_id: int
    batch: list[Any]

    def __repr__(self) -> str:
        return f"ExportBatch({self.export_id}, {len(self.batch)} messages)"


@dataclass(frozen=True)
class ExporterStarted:
    """Sent before `setup` runs by an exporter whose process the server could not see, so
    that the server can SIGKILL it hung."""

    exporter_id: int
    process: ProcessId


def attempt(export_id: int, call: Callable[[], object]) -> ExportFinished:
    """Run a sink callback: its failure (raised or returned) made picklable, with the
    traceback as text, or success."""
    try:
        result = call()
    except Exception as exc:
        failure: BaseException = exc
        detail: str | None = "".join(traceback.format_exception(exc)).rstrip()
    else:
        if not isinstance(result, BaseException):
            return ExportFinished(export_id)
        failure, detail = result, None
    try:
        pickle.dumps(failure)
    except Exception:
        failure = SinkError(f"{type(failure).__name__}: {failure}")
    return ExportFinished(export_id, failure, returned=detail is None, detail=detail)


class SinkSession:
    """One exporter's sink: set up once, then its batches, then torn down.

    A spare runs `setup` long before its batch comes: one that failed then (the
    database was down) is run again for the batch, so that the batch fails only
    for a cause that still holds, and the server retires the exporter after it.
    """

    def __init__(self, sink: Sink, server_value: Any) -> None:
        self.sink = sink
        self.server_value = server_value
        self.failed = self._setup()
        self.closed = False

    def _setup(self) -> ExportFinished | None:
        setup = attempt(0, functools.partial(self.sink.setup, self.server_value))
        return setup if setup.failure is not None else None

    def export(self, export_id: int, batch: list[Any]) -> ExportFinished:
        if self.failed is not None:
            self.failed = self._setup()
        if self.failed is not None:
            return dataclasses.replace(self.failed, export_id=export_id)
        return attempt(export_id, functools.partial(self.sink.send_batch, batch,
                                                    self.server_value))

    def close(self) -> None:
        """`teardown`, once, if `setup` succeeded; its error is logged: the data is delivered."""
        if self.closed or self.failed is not None:
            return
        self.closed = True
        try:
            self.sink.teardown(self.server_value)
        except Exception:
            log.exception("Sink.teardown raised (the batches were delivered before it)")


def export_once(export_id: int, sink: Sink, batch: list[Any], server_value: Any) -> ExportFinished:
    """One batch in a session of its own: setup, send_batch, teardown."""
    session = SinkSession(sink, server_value)
    try:
        return session.export(export_id, batch)
    finally:
        session.close()


class Exporter(Actor):  # type: ignore[misc]
    """Exports the batches the server gives it, one at a time, until asked to exit.

    Where the server cannot see its process it reports it first, so that a hung
    `setup` or `send_batch` can be killed. It never exits by itself: Thespian's
    `ChildActorExited` could then overtake a result, which would turn a delivered
    batch into a retried one.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._session: SinkSession | None = None
        if multiprocessing.parent_process() is not None:  # a process of its own
            die_with_parent()  # a SIGKILLed server must not leave exporters behind

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, ExportBatch):
            assert self._session is not None, "Prepare comes first from the same server"
            self.send(sender, self._session.export(message.export_id, message.batch))
        elif isinstance(message, Prepare):
            if message.report:
                self.send(sender, ExporterStarted(message.exporter_id, ProcessId.current()))
            self._session = SinkSession(message.sink, message.server_value)
        elif isinstance(message, ActorExitRequest) and self._session is not None:
            self._session.close()


@dataclass
class _Member:
    address: ActorAddress
    exporter_id: int
    process: ProcessId | None  # known at creation where Thespian forked it here
    export_id: int | None = None  # the batch it exports now
    served: int = 0  # batches given to it
    done: bool = False  # retiring: asked to exit
    abandoned: bool = False  # killed, or to be killed as soon as its pid is known


@dataclass
class _Forked:
    """An export run in a forked child while the server exits."""

    export_id: int
    pid: int
    result: int  # the read end of the pipe the child writes its pickled failure to


class ExporterPool:
    """The exporters of one server, created and sent to through `actor`.

    Each serves up to `batches_per_exporter` batches (None: no limit), one at a
    time; one whose batch failed, was killed or that exited is never given another.
    """

    def __init__(self, actor: Actor, sink: Sink, server_value: Any,
                 batches_per_exporter: int | None) -> None:
        self.actor = actor
        self.sink = sink
        self.server_value = server_value
        self.limit = batches_per_exporter
        self.members: list[_Member] = []  # given a batch: exporting, idle or retiring
        self.spares: deque[_Member] = deque()
        self.idle: _Member | None = None  # its batch delivered, it may take the next one
        self.now: ExportFinished | None = None
        self.forked: _Forked | None = None
        self._serial = 0

    def prepare(self) -> None:
        """Create an exporter ahead of need (~8 ms on multiprocTCPBase); its sink's `setup`
        runs at once, overlapping the export in flight."""
        address = self.actor.createActor(Exporter)
        self._serial += 1
        member = _Member(address, self._serial, child_process(self.actor, address))
        self.actor.send(address, Prepare(member.exporter_id, self.sink, self.server_value,
                                         report=member.process is None))
        self.spares.append(member)

    def start(self, export_id: int, batch: list[Any], spare: bool) -> None:
        """Give the batch to the idle exporter, else to a spare; `spare`: keep one ready."""
        member, self.idle = self.idle, None
        if member is None:
            if not self.spares:
                self.prepare()
            member = self.spares.popleft()
            self.members.append(member)
        member.export_id = export_id
        member.served += 1
        self.actor.send(member.address, ExportBatch(export_id, batch))
        if spare and not self.spares:  # make the next one while this one exports
            self.prepare()

    def started(self, message: ExporterStarted) -> None:
        member = next((m for m in [*self.members, *self.spares]
                       if m.exporter_id == message.exporter_id), None)
        if member is not None:
            member.process = message.process
            if member.abandoned:
                member.process.kill()

    def finished(self, result: ExportFinished) -> None:
        """Keep the exporter for the next batch if it delivered this one and may serve more;
        else ask it to exit (its sink's `teardown` runs then)."""
        member = self._member(result.export_id)
        if member is None or member.done:
            return
        member.export_id = None
        if (result.failure is None and not member.abandoned
                and (self.limit is None or member.served < self.limit)):
            self.idle = member
            return
        member.done = True
        self.actor.send(member.address, ActorExitRequest())

    def kill(self, export_id: int) -> bool:
        """SIGKILL the exporter; before it reports its pid, on the report. False: cannot."""
        if self.forked is not None and self.forked.export_id == export_id:
            self._reap(signal.SIGKILL)
            return True
        member = self._member(export_id)
        if member is None:
            return True
        member.abandoned = True
        if member.process is None:
            return True
        member.process.kill()
        return member.process.killable()

    def exited(self, address: ActorAddress) -> int | None:
        """Thespian reported a child's exit: the export it died in, if it had no result.

        A report can come twice, and addresses are reused: a member whose process
        still runs is not the one that exited. Thespian reports before the process
        ends; a retired one is not waited for (`dead` forgets it once ended), so that
        the server does not block on every batch's exporter exiting.
        """
        parent = os.getpid()
        for member in [*self.members, *self.spares]:
            if member.address == address and (
                    member.process is None or member.process.ended(parent) or (
                        not member.done and member.process.wait_ended(1.0, parent))):
                return self._forget(member)
        return None

    def dead(self) -> list[int]:
        """Exports whose exporter died unreported (Thespian, handling one child's exit,
        reaps every dead child but reports one), seen in /proc: the caller retries those."""
        parent = os.getpid()
        ended = [m for m in [*self.members, *self.spares] if m.process is not None
                 and m.process.killable() and m.process.ended(parent)]
        return [export_id for m in ended if (export_id := self._forget(m)) is not None]

    def watching(self) -> bool:
        """An export runs whose exporter's death only /proc may tell."""
        return any(m.process is not None and m.process.killable() and m.export_id is not None
                   and not m.done and not m.abandoned for m in self.members)

    def start_now(self, export_id: int, batch: list[Any]) -> None:
        """Export while the server exits and can receive nothing: in a forked child, so
        that `export_timeout` can still kill it (in this process under simpleSystemBase,
        which must not fork the caller). With a sink session of its own, as an exporter."""
        if multiprocessing.parent_process() is None:
            self.now = export_once(export_id, self.sink, batch, self.server_value)
            return
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.close(read)
                die_with_parent()
                # A copy, as an exporter gets: nothing the server's sink holds (a drain's
                # connection) is shared across the fork.
                sink = pickle.loads(pickle.dumps(self.sink))
                finished = export_once(export_id, sink, batch, self.server_value)
                data = memoryview(pickle.dumps(finished))
                while data:
                    data = data[os.write(write, data):]
            finally:
                os._exit(0)
        os.close(write)
        self.forked = _Forked(export_id, pid, read)

    def running_now(self) -> bool:
        return self.now is not None or self.forked is not None

    def wait_now(self, timeout: float | None) -> ExportFinished | None:
        """The result of `start_now` within `timeout` seconds, or None (it runs on)."""
        if self.now is not None:
            finished, self.now = self.now, None
            return finished
        forked = self.forked
        assert forked is not None
        ready, _, _ = select.select([forked.result], [], [], timeout)
        if not ready:
            return None
        chunks = []
        while chunk := os.read(forked.result, 1 << 16):
            chunks.append(chunk)
        self._reap(None)
        if not chunks:  # it died mid-export
            return ExportFinished(forked.export_id, EXITED)
        result: ExportFinished = pickle.loads(b"".join(chunks))
        return result

    def _reap(self, kill: signal.Signals | None) -> None:
        forked, self.forked = self.forked, None
        assert forked is not None
        if kill is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(forked.pid, kill)
        os.close(forked.result)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(forked.pid, 0)

    def close(self) -> None:
        """At exit: end every exporter left. Where Thespian notices a child's exit at once
        (TCP, UDP) an idle one or a spare is asked to exit, so its sink's `teardown` runs
        (a connection closed cleanly), and killed if it has not ended after
        `TEARDOWN_GRACE`; the others are killed at once (on multiprocQueueBase all: its
        server would wait ~2 s to notice each exit). Thespian's exit broadcast can miss
        one created just before it: kill where possible."""
        if self.forked is not None:
            self._reap(signal.SIGKILL)
        waited_for = exit_children(self.actor)
        parent = os.getpid()
        graceful = notices_exits_at_once(self.actor)
        for member in [*self.members, *self.spares]:
            healthy = (graceful and member.export_id is None and not member.done
                       and not member.abandoned)
            if member.process is not None and member.process.killable():
                ended = member.process.ended(parent)  # a retired one's pid may be reused
                if healthy and not ended:  # idle or spare: its `teardown` runs, in a grace
                    self.actor.send(member.address, ActorExitRequest())
                    killer = threading.Timer(TEARDOWN_GRACE, member.process.kill)
                    killer.daemon = True  # the server's process need not wait for it
                    killer.start()
                    continue
                if not ended:
                    member.process.kill()
                if waited_for is not None and member.address in waited_for:
                    waited_for.remove(member.address)  # Thespian need not ask it to exit
            elif not member.abandoned:
                self.actor.send(member.address, ActorExitRequest())
        forget_dead_children(self.actor)
        self.members.clear()
        self.spares.clear()

    def _member(self, export_id: int) -> _Member | None:
        return next((m for m in self.members if m.export_id == export_id), None)

    def _forget(self, member: _Member) -> int | None:
        if member is self.idle:
            self.idle = None
        if member in self.spares:
            self.spares.remove(member)
            return None
        self.members.remove(member)
        return None if member.done or member.abandoned else member.export_id
