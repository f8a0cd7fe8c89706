"""Exporters: each runs its sink's `setup`, then `send_batch` for one batch (or several in
turn, `batches_per_exporter`), in its own process where the base allows, so that a hung
or crashing sink can be killed without touching the server.

An exporter is a Thespian actor that Thespian forks beside its server; what it
exchanges with the server (the sink, batches, results) goes over the server's
`_link`, so it costs no Thespian message and works in the server's exit handler
too. The exporter learns where to connect from an environment variable set
around `createActor` (inherited by fork and by spawn), serves the link from a
thread of its own (Thespian's loop keeps its main thread, and ends it on
`ActorExitRequest`), and makes Thespian end it with SIGTERM once its link
closes. Under simpleSystemBase, which has no processes, the pool runs each
exporter's sink session inline.

`ExporterPool` owns one server's exporters, each a `Member` in an explicit phase.
"""

from __future__ import annotations

import enum
import functools
import logging
import os
import pickle
import select
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from thespian.actors import Actor, ActorAddress, ActorExitRequest

from ._base import Base, child_pid, forget_children, forget_dead_children
from ._core_events import DeadLetters
from ._link import Link, Listener, Producer
from ._process import DeathWatch, die_with_parent
from .errors import SinkError
from .sink import EXITED, Batch, FailureReason, Sink

log = logging.getLogger(__name__)

#: Seconds an exporter gets at the server's exit to run `teardown` before SIGKILL.
TEARDOWN_GRACE = 3.0

#: Set around `createActor` to "<listener name> <exporter id>": where a new exporter connects.
_ENV = "PACHKA_EXPORTER_LINK"


# ---- frames on the link -------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    exporter_id: int
    pid: int


@dataclass(frozen=True, repr=False)
class Prepare:
    sink: Sink
    server_value: Any


@dataclass(frozen=True)
class Export:
    export_id: int
    batch: Batch


@dataclass(frozen=True)
class Quit:
    """Tear down and exit. Said rather than meant by closing the link: exporters forked
    later hold copies of the server's end, so this one would never see it close."""


@dataclass(frozen=True)
class Bye:
    """Torn down: the exporter may be killed now without losing its teardown."""


@dataclass(frozen=True)
class Outcome:
    """How an export ended. A raised failure carries its traceback as an exception note;
    `returned`: the sink returned its failure rather than raising it."""

    export_id: int
    failure: FailureReason | None = None
    returned: bool = False


def attempt(export_id: int, call: Callable[[], object]) -> Outcome:
    """Run a sink callback: its failure (raised or returned) made picklable, or success."""
    try:
        result = call()
    except Exception as exc:
        failure: BaseException = exc
        exc.add_note("".join(traceback.format_exception(exc)).rstrip())
        returned = False
    else:
        if not isinstance(result, BaseException):
            return Outcome(export_id)
        failure, returned = result, True
    try:
        pickle.loads(pickle.dumps(failure))
    except Exception:
        failure = SinkError(f"{type(failure).__name__}: {failure}")
    return Outcome(export_id, failure, returned)


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

    def _setup(self) -> Outcome | None:
        setup = attempt(0, functools.partial(self.sink.setup, self.server_value))
        return setup if setup.failure is not None else None

    def export(self, export_id: int, batch: Batch) -> Outcome:
        if self.failed is not None:
            self.failed = self._setup()
        if self.failed is not None:
            return Outcome(export_id, self.failed.failure)
        if isinstance(batch, DeadLetters):
            return attempt(export_id, functools.partial(
                self.sink.dead_letter, Batch(batch, batch.id), batch.error, self.server_value))
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


# ---- the exporter actor -------------------------------------------------------------------


class Exporter(Actor):  # type: ignore[misc]
    """Serves its server's link (see the module docstring) until told to quit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._serving: threading.Thread | None = None
        where = os.environ.pop(_ENV, None)  # not for processes this one may start
        if where is not None:
            name, exporter_id, ending, server = where.split()
            die_with_parent(parent=int(server))  # its batch is the server's to retry
            self._serving = threading.Thread(
                target=_serve, args=(name, int(exporter_id), ending == "process"),
                name="pachka-exporter", daemon=True)
            self._serving.start()

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, ActorExitRequest) and self._serving is not None:
            self._serving.join(TEARDOWN_GRACE)  # its teardown, after the server's Quit


def _serve(name: str, exporter_id: int, end_process: bool) -> None:
    """Set up, export what comes, tear down; then end the process at once where Thespian
    notices that by itself within milliseconds (`end_process`).

    Thespian's own exit first tells the server, over TCP waiting for an answer
    that a server inside its exit handler never gives. Not on
    multiprocQueueBase: there Thespian reports an unannounced end by a message to
    the server's own bounded queue, which fills when many exporters end so (the
    server deadlocks writing to it); there the server sends `ActorExitRequest`.
    """
    link = None
    try:
        link = Link.connect(name)  # refused: the server has gone
        link.send(Hello(exporter_id, os.getpid()))
        prepare = link.next()
        if isinstance(prepare, Prepare):
            session = SinkSession(prepare.sink, prepare.server_value)
            while isinstance(frame := link.next(), Export):
                link.send(session.export(frame.export_id, frame.batch))
            session.close()
            link.send(Bye())
    finally:
        if link is not None:
            link.close()
        if end_process:
            logging.shutdown()
            os._exit(0)


# ---- the pool -----------------------------------------------------------------------------


class Phase(enum.Enum):
    STARTING = "starting"  # created, not connected yet
    SPARE = "spare"  # connected, its sink set up; no batch yet
    EXPORTING = "exporting"  # has a batch (sent once connected)
    IDLE = "idle"  # delivered its batch; may take the next
    SPENT = "spent"  # served `batches_per_exporter`; kept until another is connected
    RETIRING = "retiring"  # asked to quit: tears down, then exits
    ABANDONED = "abandoned"  # killed, or to be killed once its pid is known


@dataclass(eq=False)
class Member:
    exporter_id: int
    phase: Phase
    address: ActorAddress | None = None
    link: Link | None = None
    session: SinkSession | None = None  # under simpleSystemBase: the sink, run inline
    export: Export | None = None
    served: int = 0

    @property
    def connected(self) -> bool:
        """It can be handed a batch now: its process has connected (or its sink runs inline)."""
        return self.link is not None or self.session is not None


#: How many dead exporters the pool remembers to forget again at the server's exit.
RECENTLY_ENDED = 64


class ExporterPool:
    """The exporters of one server, created by `actor`, reached through a `Listener`.

    Each serves up to `batches_per_exporter` batches (None: no limit), one at a
    time; one whose batch failed, was killed or that exited is never given another.
    One that served its batches retires once another exporter is connected, not
    before: a bare exit then always finds a connected one to reuse (`begin_exit`).
    """

    def __init__(self, actor: Actor, base: Base, sink: Sink, server_value: Any,
                 batches_per_exporter: int | None) -> None:
        self.actor = actor
        self.inline = base.inline
        self.ends_quietly = base.notices_exits_at_once  # see `_serve`
        self.sink = sink
        self.server_value = server_value
        self.limit = batches_per_exporter
        self.listener = None if self.inline else Listener()
        self.members: dict[int, Member] = {}
        self.watch: DeathWatch[int] = DeathWatch()
        self._unknown: list[Link] = []  # connected, their Hello not read yet
        self.producers: list[Link] = []  # handles' links, which the server reads
        #: The last exporters seen dead, for Thespian to forget at exit (it may register
        #: one late, when its start-up notice comes); bounded: one dies per batch, and
        #: the older ones are forgotten as dead processes (`forget_dead_children`).
        self._ended: deque[ActorAddress] = deque(maxlen=RECENTLY_ENDED)
        self._serial = 0
        #: The server is in its exit handler and receives no Thespian message: exporters
        #: are reused whatever `batches_per_exporter` says (on multiprocQueueBase a child
        #: started then blocks on the server's full queue), and ended without Thespian.
        self.exiting = False
        self.closing = self.closed = False

    def prepare(self) -> Member:
        """Create an exporter ahead of need; its sink's `setup` runs once it connects."""
        self._serial += 1
        member = self.members[self._serial] = Member(self._serial, Phase.STARTING)
        if self.inline:
            member.session = SinkSession(self.sink, self.server_value)
            member.phase = Phase.SPARE
            return member
        assert self.listener is not None
        ending = "process" if self.ends_quietly else "thespian"
        os.environ[_ENV] = f"{self.listener.name} {member.exporter_id} {ending} {os.getpid()}"
        try:
            member.address = self.actor.createActor(Exporter)
        finally:
            del os.environ[_ENV]
        pid = child_pid(self.actor, member.address)
        if pid is not None:
            self.watch.watch(member.exporter_id, pid)
        return member

    def start(self, export_id: int, batch: Batch, spare: bool) -> list[Outcome]:
        """Give the batch to a connected exporter (idle, spare; at exit a spent one too), else
        to one starting; `spare`: keep one ready. Under simpleSystemBase the export runs
        now: its outcome is returned."""
        member = self._ready() or self._in(Phase.STARTING) or self.prepare()
        member.phase, member.export = Phase.EXPORTING, Export(export_id, batch)
        member.served += 1
        outcomes = self._send(member)
        if spare and not (self._in(Phase.SPARE) or self._in(Phase.STARTING)):
            self.prepare()  # the next one starts while this one exports
        self._retire_spent()
        return outcomes

    def begin_exit(self) -> None:
        """The server's bare exit begins: exporters are reused whatever `batches_per_exporter`
        says, and a batch handed to an exporter not connected yet goes to a connected one.
        On multiprocQueueBase an exporter's process connects only once Thespian has put its
        start-up notice into the server's queue (10 places), which the exit handler does not
        read: with the queue full it never connects, and its batch would wait for
        `export_timeout` while `shutdown_timeout` ran out."""
        self.exiting = True
        held = next((m for m in self.members.values()
                     if m.phase is Phase.EXPORTING and not m.connected), None)
        ready = self._ready()
        if held is None or ready is None:
            return
        assert ready.link is not None  # not inline: an inline exporter never waits to connect
        ready.phase, ready.export, ready.served = Phase.EXPORTING, held.export, ready.served + 1
        held.phase, held.export, held.served = Phase.STARTING, None, held.served - 1
        self._send(ready)

    def kill(self, export_id: int) -> bool:
        """SIGKILL the exporter of `export_id`; False where it cannot be (simpleSystemBase)."""
        member = self._exporting(export_id)
        if member is None:
            return True
        if self.inline:
            return False
        member.phase = Phase.ABANDONED  # never connected yet: its link is refused
        self.watch.kill(member.exporter_id)
        return True

    @property
    def busy(self) -> bool:
        """Something will come that only a look (`poll`) sees: a connection or a result."""
        return any(m.phase in (Phase.STARTING, Phase.EXPORTING) for m in self.members.values())

    def fds(self) -> list[int]:
        """What `poll` reads, to wait on in `select`."""
        links = [m.link for m in self.members.values() if m.link and not m.link.closed]
        return [*([self.listener.fileno()] if self.listener else []),
                *(link.fileno() for link in [*self._unknown, *links]), *self.watch.fds()]

    def poll(self) -> list[Outcome]:
        """Take new connections, results and deaths, without blocking."""
        outcomes: list[Outcome] = []
        if self.closed:
            return outcomes
        if self.listener is not None:
            self._unknown += self.listener.accept()
            for link in list(self._unknown):
                self._hello(link)
        for member in list(self.members.values()):
            if member.link is not None:
                outcomes += self._results(member, member.link.receive())
        for exporter_id in self.watch.dead():
            dead = self.members.pop(exporter_id, None)
            if dead is not None and dead.address is not None:
                self._ended.append(dead.address)
            if dead is not None and dead.link is not None:  # what it wrote still counts
                outcomes += self._results(dead, dead.link.receive())
                dead.link.close()
            if dead is not None and dead.phase is Phase.EXPORTING and dead.export is not None:
                outcomes.append(Outcome(dead.export.export_id, EXITED))
        return outcomes

    def close(self) -> None:
        """At the server's exit: end every exporter. Those that are (or get) connected and
        hold no batch are asked to quit, so that their sink's `teardown` runs, and are
        killed if still there after `TEARDOWN_GRACE`; the others are killed at once.
        Thespian then need not wait for any (it would wait ~2 s for each on
        multiprocQueueBase, 10 s for one killed before it connected)."""
        if self.closing:
            return
        self.closing = self.exiting = True
        for member in list(self.members.values()):
            if member.phase in (Phase.SPARE, Phase.IDLE, Phase.SPENT):
                self._retire(member)
            elif member.phase is not Phase.RETIRING:
                member.phase = Phase.ABANDONED  # if it connects yet, it is turned away
                self.watch.kill(member.exporter_id)
        deadline = time.monotonic() + TEARDOWN_GRACE
        while self.watch.fds() and (left := deadline - time.monotonic()) > 0:
            select.select(self.fds(), [], [], left)
            self.poll()  # deaths, and each `Bye`
        for exporter_id in self.watch.fds().values():
            self.watch.kill(exporter_id)
        self.watch.dead(1.0)
        self.watch.close()
        self.closed = True
        for link in [*self._unknown, *(m.link for m in self.members.values() if m.link)]:
            link.close()
        self._ended.extend(m.address for m in self.members.values() if m.address is not None)
        self.members.clear()
        if self.listener is not None:
            self.listener.close()

    def forget(self) -> None:
        """Last thing in the server's exit handler: Thespian must not wait for exporters that
        have ended (it may have registered one late, when its start-up notice came)."""
        forget_dead_children(self.actor)
        forget_children(self.actor, list(self._ended))

    # ---- inside -------------------------------------------------------------------------

    def _in(self, phase: Phase) -> Member | None:
        return next((m for m in self.members.values() if m.phase is phase), None)

    def _ready(self) -> Member | None:
        """A connected exporter that may take a batch now; a spent one only at exit. One
        whose process has ended, which `poll` has not seen yet, is passed by: a batch given
        to it would fail as "exited" once more."""
        phases = (Phase.IDLE, Phase.SPARE, *((Phase.SPENT,) if self.exiting else ()))
        return next((m for phase in phases for m in self.members.values()
                     if m.phase is phase and not self.watch.ended(m.exporter_id)), None)

    def _exporting(self, export_id: int) -> Member | None:
        return next((m for m in self.members.values() if m.phase is Phase.EXPORTING
                     and m.export is not None and m.export.export_id == export_id), None)

    def _hello(self, link: Link) -> None:
        """A new connection says which exporter it is (at once, but perhaps not yet read)."""
        frames = link.receive()
        if not frames and not link.closed:
            return
        self._unknown.remove(link)
        hello = frames[0] if frames else None
        if isinstance(hello, Producer):  # a handle's, for the server's exit (`_exit`)
            self.producers.append(link)
            return
        member = self.members.get(hello.exporter_id) if isinstance(hello, Hello) else None
        if member is None or member.phase is Phase.ABANDONED:
            link.close()  # abandoned before it connected: it ends once its link closes
            return
        assert isinstance(hello, Hello)
        member.link = link
        if self.watch.pid(member.exporter_id) is None:
            self.watch.watch(member.exporter_id, hello.pid)
        link.send(Prepare(self.sink, self.server_value))
        if member.phase is Phase.STARTING:
            member.phase = Phase.SPARE
        self._send(member)
        self._retire_spent()

    def _send(self, member: Member) -> list[Outcome]:
        """Hand the member its batch, if it has one and can take it now."""
        if member.phase is not Phase.EXPORTING or member.export is None:
            return []
        if member.session is not None:
            return self._results(member, [member.session.export(member.export.export_id,
                                                                member.export.batch)])
        if member.link is not None:
            member.link.send(member.export)
        return []

    def _results(self, member: Member, frames: list[Any]) -> list[Outcome]:
        """Outcomes of the member's export; it is kept for the next batch only if it
        delivered this one and may serve more, else it retires."""
        if self.exiting and not self.ends_quietly and any(isinstance(f, Bye) for f in frames):
            self.watch.kill(member.exporter_id)  # torn down; Thespian could not end it now
        outcomes = [f for f in frames if isinstance(f, Outcome) and member.export is not None
                    and f.export_id == member.export.export_id]
        if not outcomes or member.phase is not Phase.EXPORTING:
            return []
        member.export = None
        if outcomes[0].failure is not None:
            self._retire(member)
        elif self.limit is None or member.served < self.limit or self.exiting:
            member.phase = Phase.IDLE
        else:
            member.phase = Phase.SPENT
            self._retire_spent()
        return outcomes[:1]

    def _retire_spent(self) -> None:
        """Spent exporters retire once another connected one can take the next batch."""
        if any(m.connected and m.phase in (Phase.SPARE, Phase.IDLE, Phase.EXPORTING)
               for m in self.members.values()):
            for member in [m for m in self.members.values() if m.phase is Phase.SPENT]:
                self._retire(member)

    def _retire(self, member: Member) -> None:
        member.phase = Phase.RETIRING
        if member.session is not None:
            member.session.close()
            del self.members[member.exporter_id]
        else:
            if member.link is not None:
                member.link.send(Quit())  # it tears down, then ends (see `_serve`)
            if not (self.ends_quietly or self.exiting) and member.address is not None:
                self.actor.send(member.address, ActorExitRequest())
