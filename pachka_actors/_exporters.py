"""Exporters: each runs `send_batch` for one batch, in its own process where the base
allows, so that a hung or crashing sink can be killed without touching the server.

`ExporterPool` owns them for one server: exporter actors, the spare created ahead
of need, their process ids, kills, abandoned ones, and the exports run while the
server exits and can receive nothing.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import select
import signal
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any

from thespian.actors import Actor, ActorAddress, ActorExitRequest

from ._process import ProcessId, die_with_parent
from ._thespian import child_process, exit_children, forget_dead_children
from .core import ExportFinished
from .errors import SinkError
from .sink import EXITED, Sink


@dataclass(frozen=True, repr=False)
class ExportBatch:
    export_id: int
    batch: list[Any]
    sink: Sink
    server_value: Any

    def __repr__(self) -> str:
        return f"ExportBatch({self.export_id}, {len(self.batch)} messages)"


@dataclass(frozen=True)
class ExporterStarted:
    """Sent before `send_batch` runs, so that the server can SIGKILL a hung exporter."""

    export_id: int
    process: ProcessId


def export(export_id: int, sink: Sink, batch: list[Any], server_value: Any) -> ExportFinished:
    """Call `send_batch`: the result, with a picklable failure and its traceback as text."""
    try:
        result = sink.send_batch(batch, server_value)
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


class Exporter(Actor):  # type: ignore[misc]
    """Exports one batch, then waits for the server to end it.

    It reports its process first so a hung `send_batch` can be killed, and never
    exits by itself: Thespian's `ChildActorExited` could then overtake the
    result, which would turn a delivered batch into a retried one.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if multiprocessing.parent_process() is not None:  # a process of its own
            die_with_parent()  # a SIGKILLed server must not leave exporters behind

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, ExportBatch):
            self.send(sender, ExporterStarted(message.export_id, ProcessId.current()))
            self.send(sender, export(message.export_id, message.sink, message.batch,
                                     message.server_value))


@dataclass
class _Member:
    address: ActorAddress
    process: ProcessId | None  # known at creation where Thespian forked it here
    export_id: int | None = None
    done: bool = False  # its result came; it is being ended
    abandoned: bool = False  # killed, or to be killed as soon as its pid is known


@dataclass
class _Forked:
    """An export run in a forked child while the server exits."""

    export_id: int
    pid: int
    result: int  # the read end of the pipe the child writes its pickled failure to


class ExporterPool:
    """The exporters of one server, created and sent to through `actor`."""

    def __init__(self, actor: Actor) -> None:
        self.actor = actor
        self.members: list[_Member] = []
        self.spares: deque[_Member] = deque()
        self.now: ExportFinished | None = None
        self.forked: _Forked | None = None

    def prepare(self) -> None:
        """Create an exporter ahead of need: it costs ~8 ms on multiprocTCPBase."""
        address = self.actor.createActor(Exporter)
        self.spares.append(_Member(address, child_process(self.actor, address)))

    def start(self, export_id: int, batch: list[Any], sink: Sink, server_value: Any,
              spare: bool) -> None:
        if not self.spares:
            self.prepare()
        member = self.spares.popleft()
        member.export_id = export_id
        self.members.append(member)
        self.actor.send(member.address, ExportBatch(export_id, batch, sink, server_value))
        if spare:  # make the next one while this one exports
            self.prepare()

    def started(self, message: ExporterStarted) -> None:
        member = self._member(message.export_id)
        if member is not None:
            member.process = message.process
            if member.abandoned:
                self.kill(message.export_id)

    def finished(self, export_id: int) -> None:
        member = self._member(export_id)
        if member is not None and not member.done:
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
        still runs is not the one that exited.
        """
        for member in [*self.members, *self.spares]:
            if member.address == address and (
                    member.process is None or member.process.wait_ended(1.0, os.getpid())):
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
        return any(m.process is not None and m.process.killable() and not m.done
                   and not m.abandoned for m in self.members)

    def start_now(self, export_id: int, batch: list[Any], sink: Sink, server_value: Any) -> None:
        """Export while the server exits and can receive nothing: in a forked child, so
        that `export_timeout` can still kill it (in this process under simpleSystemBase,
        which must not fork the caller)."""
        if multiprocessing.parent_process() is None:
            self.now = export(export_id, sink, batch, server_value)
            return
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.close(read)
                die_with_parent()
                data = memoryview(pickle.dumps(export(export_id, sink, batch, server_value)))
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
        """At exit: end every exporter left. Thespian's exit broadcast can miss one created
        just before it, which would then outlive the server: kill where possible."""
        if self.forked is not None:
            self._reap(signal.SIGKILL)
        waited_for = exit_children(self.actor)
        for member in [*self.members, *self.spares]:
            if member.process is not None and member.process.killable():
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
        if member in self.spares:
            self.spares.remove(member)
            return None
        self.members.remove(member)
        return None if member.done or member.abandoned else member.export_id
