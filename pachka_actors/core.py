"""The Pachka server's state machine, pure: events in, effects out.

No Thespian, no clock, no I/O (in the manner of h11's `_state.py`): the actor shell
in `server.py` turns messages into the events of `_core_events` and performs the
effects the machine returns. Timers and exports are named by tokens the machine
issues itself, because exporter addresses get reused; the machine cancels every
timer it supersedes, so a timer or result that still comes stale is an anomaly
and is logged at WARNING, as Pachka does.

One small record per state, as Pachka's `state.ex`: `Idle` (accumulating; a batch
timer runs while messages wait), `Exporting` (one export in flight, guarded by the
export timer), `RetryBackoff` (the failed batch waits for the retry timer),
`Draining` (in `drain_on_terminate`) and the final `Done`. `terminating` is
Pachka's termination mode on top of them. A bare exit is a stop with a bound: the
`SHUTDOWN` timer, after which what is left is drained, spilled or reported lost.

Byte limits (`max_batch_bytes`, `critical_queue_bytes`) are the count rules again in
bytes; the shell measures each message once (`Sink.message_size`) and passes its size
in, so the core does no pickling. Every message queued fits in a batch alone (a larger
one is refused), so a batch is cut as soon as the next message would not fit.

Batches have ids (`Batch.id`), kept across retries. A formed batch that cannot
go out now (a failed export while stopping) waits in `pending`, ahead of the queue,
with its id, so that a sink that recorded the id knows it again. With a journal,
each step also notes what it changed in the accepted, undelivered set (`notes`,
taken by the shell, written by `_journal.py`): a crash then keeps the ids too.

Longer than this project's ~400-line guide on purpose: it is one machine, and its
transitions (producers' credits, timers, exports, stopping) read together, as
they do in Pachka's `server.ex`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import chain, islice
from typing import Any

from ._core_events import (
    Answer,
    ArmRetryTimer,
    ArmTimer,
    CancelTimer,
    CreditRequested,
    DeadLetters,
    Delivered,
    Drain,
    DrainDone,
    Effect,
    Event,
    ExitRequested,
    ExportDone,
    Finish,
    Formed,
    JournalFull,
    KillExport,
    Log,
    Lose,
    MessagesReceived,
    Note,
    Queued,
    Replaced,
    Reply,
    Restored,
    ServerStatus,
    Spill,
    StartExport,
    State,
    StopRequested,
    Timer,
    TimerFired,
    TimerKind,
)
from .errors import MessageTooLarge, Overloaded, PermanentSinkError, plural
from .messages import Accepted, Granted
from .sink import KILLED, Batch, FailureReason

__all__ = [
    "Answer",
    "ArmRetryTimer",
    "ArmTimer",
    "CancelTimer",
    "CreditRequested",
    "DeadLetters",
    "Delivered",
    "Done",
    "Drain",
    "DrainDone",
    "Draining",
    "Effect",
    "Event",
    "ExitRequested",
    "ExportDone",
    "Exporting",
    "Finish",
    "Formed",
    "Idle",
    "JournalFull",
    "KillExport",
    "Log",
    "Lose",
    "MessagesReceived",
    "Note",
    "PachkaCore",
    "Phase",
    "Queued",
    "Replaced",
    "Reply",
    "Restored",
    "RetryBackoff",
    "ServerStatus",
    "Spill",
    "StartExport",
    "State",
    "StopRequested",
    "Timer",
    "TimerFired",
    "TimerKind",
]

# ---- states -----------------------------------------------------------------------------


@dataclass
class Idle:
    timer: Timer | None = None  # the batch timer, while messages wait


@dataclass
class Exporting:
    export_id: int
    batch: Batch
    retry_num: int
    timer: Timer | None  # the export timer (None: no export_timeout)


@dataclass
class RetryBackoff:
    batch: Batch
    retry_num: int
    timer: Timer


@dataclass
class Draining:
    batches: list[Batch]  # everything drained, as batches with their ids
    last_chance: bool  # shutdown_timeout has passed: if the drain fails, all is lost


@dataclass
class Done:
    pass


Phase = Idle | Exporting | RetryBackoff | Draining | Done

_STATES = {Idle: State.IDLE, Exporting: State.EXPORTING, RetryBackoff: State.RETRY_BACKOFF,
           Draining: State.DRAINING, Done: State.STOPPED}


@dataclass
class PachkaCore:
    """One Pachka server's state. `handle` mutates it and returns the effects to perform."""

    max_batch_size: int
    critical_queue_size: int
    max_batch_delay: float | None
    export_timeout: float | None
    drains: bool
    credit_timeout: float | None = None
    shutdown_timeout: float | None = None
    #: What cannot be delivered in time is kept for the next server (`Spill`), not lost.
    spills: bool = False
    #: Batch ids are this prefix and a serial number: unique across servers when it is.
    batch_prefix: str = ""
    #: No batch holds more bytes; a larger message is refused (None: no limit).
    max_batch_bytes: int | None = None
    #: Queued bytes (with the bytes granted) beyond which messages are refused.
    critical_queue_bytes: int | None = None
    #: Whether a byte limit is set: the shell then passes every message's size.
    measures: bool = field(init=False)
    #: With a journal: what each step changed in the accepted, undelivered set, for the
    #: shell to make durable (`take_notes`) before it performs the step's effects.
    notes: list[Note] | None = None
    #: Why the journal refuses new messages (`JournalFull`), None while it has room.
    journal_full: str | None = None
    phase: Phase = field(default_factory=Idle)
    terminating: bool = False
    queue: deque[Any] = field(default_factory=deque)
    #: The queued messages' sizes, beside `queue`, and their sum (kept while `measures`).
    sizes: deque[int] = field(default_factory=deque)
    queue_bytes: int = 0
    #: Formed batches waiting to be exported, ahead of the queue.
    pending: deque[Batch] = field(default_factory=deque)
    #: Open grants (id: credits) and their sum: room promised to producers' buffers.
    credits: dict[int, int] = field(default_factory=dict)
    #: The grants shipped last: a shipment a handle sends again (it could not tell whether
    #: the first one arrived) is answered, not taken twice.
    shipped: deque[int] = field(default_factory=lambda: deque(maxlen=1024))
    #: The grants given with those shipments (shipment's credit: grant), withdrawn if the
    #: shipment comes again: its producer, exiting, never heard of the grant.
    rode: dict[int, int] = field(default_factory=dict)
    reserved: int = 0
    #: With `critical_queue_bytes`: the open grants' room in bytes (id: bytes), and its sum.
    credit_bytes: dict[int, int] = field(default_factory=dict)
    reserved_bytes: int = 0
    #: Credit requests waiting for room, in turn: (requester, count, wait timer, size).
    waiting: deque[tuple[Any, int, Timer, int]] = field(default_factory=deque)
    #: The shutdown_timeout timer of a bare exit, while it runs.
    bound: Timer | None = None
    _serial: int = 0
    _batches: int = 0

    def __post_init__(self) -> None:
        self.measures = self.max_batch_bytes is not None or self.critical_queue_bytes is not None

    # ---- views --------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return _STATES[type(self.phase)]

    @property
    def batch(self) -> Batch:
        """The batch in flight or waiting for its retry."""
        phase = self.phase
        return phase.batch if isinstance(phase, Exporting | RetryBackoff) else Batch()

    @property
    def retry_num(self) -> int:
        return getattr(self.phase, "retry_num", 0)

    @property
    def export_id(self) -> int | None:
        return getattr(self.phase, "export_id", None)

    @property
    def done(self) -> bool:
        return isinstance(self.phase, Done)

    @property
    def timer(self) -> Timer | None:
        return getattr(self.phase, "timer", None)

    @property
    def held(self) -> int:
        """Messages accepted and not yet delivered: the batch, pending, draining, queued."""
        phase = self.phase
        draining = sum(map(len, phase.batches)) if isinstance(phase, Draining) else 0
        return len(self.batch) + sum(map(len, self.pending)) + draining + len(self.queue)

    def status(self) -> ServerStatus:
        return ServerStatus(self.state, self.terminating, len(self.queue),
                            self.held - len(self.queue), self.reserved, self.retry_num,
                            self.timer, self.export_id, self.queue_bytes)

    def take_notes(self) -> list[Note]:
        """The notes of the steps since the last call (none without a journal)."""
        notes = self.notes
        if not notes:
            return []
        self.notes = []
        return notes

    def handle(self, event: Event) -> list[Effect]:
        effects = self._step(event)
        if self.waiting:  # room may have freed: waiting producers are served first
            effects += self._serve_waiting()
        return effects

    def _step(self, event: Event) -> list[Effect]:
        match event:
            case MessagesReceived(messages, None, sizes):
                return self._receive(messages, sizes)
            case MessagesReceived(messages, int() as credit, sizes, ask, ask_size):
                return self._receive_credited(messages, credit, sizes, ask, ask_size)
            case CreditRequested(count, wait, requester, size):
                return self._grant(count, wait, requester, size)
            case TimerFired(timer):
                return self._timer_fired(timer)
            case ExportDone(export_id, failure, _):
                return self._export_done(export_id, failure)
            case StopRequested():
                return self._stop_requested()
            case ExitRequested():
                return self._exit_requested()
            case DrainDone(failure):
                return self._drain_done(failure)
            case Restored(batches, sizes):
                return self._restore(batches, sizes)
            case JournalFull(why):
                self.journal_full = why
                return []
        raise TypeError(f"not a core event: {event!r}")

    # ---- producers ----------------------------------------------------------------------

    def _room(self, wanted: int, sizes: Sequence[int] = ()) -> tuple[int, Overloaded | None]:
        """How many of `wanted` fit beside the queue and the open grants, and why not more:
        in count, and in bytes by `sizes` (the first messages' sizes, as far as known)."""
        if self.terminating:
            return 0, Overloaded("server is terminating", terminating=True)
        if self.journal_full is not None and wanted:
            return 0, Overloaded(self.journal_full, limit="journal_max_bytes")
        room = max(0, min(wanted, self.critical_queue_size - len(self.queue) - self.reserved))
        refused = None
        if room < wanted:
            refused = Overloaded(f"queue is at critical_queue_size={self.critical_queue_size}",
                                 limit="critical_queue_size")
        if self.critical_queue_bytes is not None:
            free = self.critical_queue_bytes - self.queue_bytes - self.reserved_bytes
            if sum(islice(sizes, room)) > free:  # the prefix that fits, one by one
                for fits, size in enumerate(islice(sizes, room)):  # (none: the count refused)
                    free -= size
                    if free < 0:
                        return fits, Overloaded(
                            f"queue is at critical_queue_bytes={self.critical_queue_bytes} "
                            f"(a message of {size} bytes does not fit)",
                            limit="critical_queue_bytes")
        return room, refused

    def _need(self, size: int) -> tuple[int, ...]:
        """The bytes a credit request needs, as `_room`'s sizes: its message's (or 1)."""
        return (max(size, 1),) if self.critical_queue_bytes is not None else ()

    def _too_large(self, sizes: Sequence[int] | None) -> MessageTooLarge | None:
        """The first message larger than `max_batch_bytes`: no batch could hold it."""
        limit = self.max_batch_bytes
        if limit is None or sizes is None or not sizes or max(sizes) <= limit:
            return None
        index = next(i for i, size in enumerate(sizes) if size > limit)
        return MessageTooLarge(sizes[index], limit, index if len(sizes) > 1 else None)

    def _enqueue(self, messages: Sequence[Any], sizes: Sequence[int] | None) -> None:
        self.queue.extend(messages)
        if self.notes is not None and messages:
            self.notes.append(Queued(messages))
        if self.measures:
            assert sizes is not None and len(sizes) == len(messages), "sizes not measured"
            self.sizes.extend(sizes)
            self.queue_bytes += sum(sizes)

    def _receive(self, messages: Sequence[Any], sizes: Sequence[int] | None) -> list[Effect]:
        """A list holding a message too large for any batch is refused whole."""
        if (too_large := self._too_large(sizes)) is not None:
            return [Answer(Accepted(0, too_large))]
        count, refused = self._room(len(messages), sizes or ())
        if count == len(messages):
            self._enqueue(messages, sizes)
        else:
            self._enqueue(messages[:count], None if sizes is None else sizes[:count])
        effects: list[Effect] = [Answer(Accepted(count, refused))]
        if isinstance(self.phase, Idle) and count:
            effects += self._settle()
        return effects

    def _receive_credited(self, messages: Sequence[Any], credit: int,
                          sizes: Sequence[int] | None, ask: int = 0,
                          ask_size: int = 0) -> list[Effect]:
        """Promised messages are never refused, even past an expired grant or a stop; but
        for one too large for any batch (its producer measured it otherwise). Room for
        `ask` more is granted after them, as a request would be that came next."""
        if isinstance(self.phase, Done):
            return [Answer(Accepted(0)), Log(logging.ERROR, f"{plural(len(messages), 'message')} "
                                                            f"under "
                                                            f"credit {credit} came after the "
                                                            f"server stopped")]
        too_large = self._too_large(sizes)
        effects: list[Effect] = [Answer(Accepted(len(messages)))]
        if too_large is not None:
            assert sizes is not None and self.max_batch_bytes is not None
            fit = [i for i, size in enumerate(sizes) if size <= self.max_batch_bytes]
            effects = [Answer(Accepted(len(fit), too_large)),
                       Log(logging.ERROR, f"{plural(len(messages) - len(fit), 'message')} under "
                                          f"credit {credit} larger than max_batch_bytes="
                                          f"{self.max_batch_bytes}: not taken (their producer "
                                          f"measured them otherwise: give it the sink)")]
            messages, sizes = [messages[i] for i in fit], [sizes[i] for i in fit]
        if credit in self.shipped:  # sent again, over the link at exit: taken already
            if (grant := self.rode.pop(credit, None)) in self.credits:
                effects += self._withdraw(grant)
            return effects
        self.shipped.append(credit)
        granted = self.credits.pop(credit, None)
        granted_bytes = self.credit_bytes.pop(credit, None)
        if granted is None:
            effects.append(Log(logging.WARNING, f"credit {credit} expired before its "
                                                f"{len(messages)} messages came; taking them "
                                                f"beyond critical_queue_size"))
        else:
            self.reserved -= granted
            if self.credit_timeout is not None:
                effects.append(CancelTimer(Timer(TimerKind.CREDIT, credit)))
            if len(messages) > granted:
                effects.append(Log(logging.ERROR, f"credit {credit} was for "
                                                  f"{plural(granted, 'message')}, "
                                                  f"{len(messages)} came; taking them all"))
        if granted_bytes is not None:
            self.reserved_bytes -= granted_bytes
            if sizes is not None and sum(sizes) > granted_bytes:
                effects.append(Log(logging.ERROR, f"credit {credit} was for {granted_bytes} "
                                                  f"bytes, {sum(sizes)} came; taking them all"))
        self._enqueue(messages, sizes)
        if isinstance(self.phase, Idle):
            effects += self._settle()
        elif self.terminating and self.drains and isinstance(self.phase, RetryBackoff) \
                and messages:  # dead letters wait for their retry; these need not wait
            effects += self._drain()
        if ask and not self.waiting:  # else those waiting for room come first
            effects = self._ride(credit, ask, ask_size, effects)
        return effects

    def _ride(self, credit: int, ask: int, ask_size: int,
              effects: list[Effect]) -> list[Effect]:
        """The reply to shipment `credit` (`effects[0]`) carries the next grant, if there is
        room; else none, and nothing is refused: the producer asks with a `RequestCredit`."""
        grant, expiry = self._open_credit(ask, ask_size)
        if grant.credit is None:
            return effects
        self.rode[credit] = grant.credit
        if len(self.rode) > len(self.shipped):  # no longer than `shipped` recalls them
            del self.rode[next(iter(self.rode))]
        answer = effects[0]
        assert isinstance(answer, Answer) and isinstance(answer.value, Accepted)
        return [Answer(replace(answer.value, granted=grant)), *effects[1:], *expiry]

    def _withdraw(self, credit: int) -> list[Effect]:
        """Close grant `credit`, given with a shipment whose producer did not hear of it."""
        effects: list[Effect] = [Log(logging.INFO, f"credit {credit}, given with a shipment "
                                                   f"sent again, withdrawn")]
        if self.credit_timeout is not None:
            effects.append(CancelTimer(Timer(TimerKind.CREDIT, credit)))
        return self._close_credit(credit, effects)

    def _close_credit(self, credit: int, effects: list[Effect]) -> list[Effect]:
        """Give back the room of open grant `credit` unused, after `effects`: a stopping
        server may have waited only for it."""
        self.reserved -= self.credits.pop(credit)
        self.reserved_bytes -= self.credit_bytes.pop(credit, 0)
        if isinstance(self.phase, Idle) and self.terminating:
            effects += self._settle()
        return effects

    def _grant(self, count: int, wait: float = 0.0, requester: Any = None,
               size: int = 0) -> list[Effect]:
        if wait > 0 and not self.terminating and (
                self.waiting or not self._room(count, self._need(size))[0]):
            timer = Timer(TimerKind.WAIT, self._issue())
            self.waiting.append((requester, count, timer, size))
            return [ArmTimer(timer, wait)]
        grant, expiry = self._open_credit(count, size)
        return [Answer(grant), *expiry]

    def _open_credit(self, count: int, size: int) -> tuple[Granted, list[Effect]]:
        """The grant (answered by the caller to whoever asked), and its expiry timer. With
        `critical_queue_bytes` it reserves bytes too: what is free, up to `max_batch_bytes`
        (a shipment then holds about a batch)."""
        granted, refused = self._room(count, self._need(size))
        if not granted:
            return Granted(None, 0, refused), []
        credit = self._issue()
        self.credits[credit] = granted
        self.reserved += granted
        room = None
        if self.critical_queue_bytes is not None:
            room = self.critical_queue_bytes - self.queue_bytes - self.reserved_bytes
            if self.max_batch_bytes is not None:
                room = min(room, self.max_batch_bytes)
            self.credit_bytes[credit] = room
            self.reserved_bytes += room
        grant = Granted(credit, granted, refused, room, self.max_batch_bytes)
        if self.credit_timeout is None:
            return grant, []
        return grant, [ArmTimer(Timer(TimerKind.CREDIT, credit), self.credit_timeout)]

    def _serve_waiting(self) -> list[Effect]:
        """Answer waiting credit requests, in turn, while there is room (or refuse them all
        once the server terminates)."""
        effects: list[Effect] = []
        while self.waiting and (self.terminating
                                or self._room(1, self._need(self.waiting[0][3]))[0]):
            requester, count, timer, size = self.waiting.popleft()
            effects.append(CancelTimer(timer))
            grant, expiry = self._open_credit(count, size)
            effects += [Reply(requester, grant), *expiry]
        return effects

    def _wait_expired(self, timer: Timer) -> list[Effect]:
        for waiter in self.waiting:
            if waiter[2] == timer:
                # Waiters are served in turn as soon as room frees: the first has none.
                full = self._room(1, self._need(self.waiting[0][3]))[1]
                assert full is not None
                self.waiting.remove(waiter)
                refused = Overloaded(f"{full}, and stayed so while the request waited",
                                     limit=full.limit)
                return [Reply(waiter[0], Granted(None, 0, refused))]
        return [Log(logging.WARNING, f"wait timeout {timer.token} for no waiting request")]

    def _credit_expired(self, credit: int) -> list[Effect]:
        """A producer that neither shipped nor returned its credits (crashed?) frees them."""
        granted = self.credits.get(credit)
        if granted is None:
            return [Log(logging.WARNING, f"credit timeout {credit} for no open credit")]
        return self._close_credit(credit, [Log(logging.WARNING, f"credit {credit} for "
                                                                f"{plural(granted, 'message')} "
                                                                f"expired unused")])

    # ---- timers and exports -------------------------------------------------------------

    def _timer_fired(self, timer: Timer) -> list[Effect]:
        if timer.kind is TimerKind.CREDIT:
            return self._credit_expired(timer.token)
        if timer.kind is TimerKind.WAIT:
            return self._wait_expired(timer)
        if timer.kind is TimerKind.SHUTDOWN and timer == self.bound:
            return self._out_of_time()
        phase = self.phase
        if timer != self.timer:
            return [Log(logging.WARNING, f"{timer.kind.value} timeout {timer.token} received in "
                                         f"wrong state {self.state.value} (current timer: "
                                         f"{self.timer}, current export: {self.export_id})")]
        if isinstance(phase, Idle):
            phase.timer = None
            return self._start_export(self._take_batch(), retry_num=0)
        if isinstance(phase, Exporting):
            phase.timer = None
            return [KillExport(phase.export_id), *self._export_failed(phase, KILLED)]
        assert isinstance(phase, RetryBackoff)
        return self._start_export(phase.batch, phase.retry_num)

    def _export_done(self, export_id: int, failure: FailureReason | None) -> list[Effect]:
        phase = self.phase
        if not isinstance(phase, Exporting) or export_id != phase.export_id:
            return [Log(logging.WARNING, f"export {export_id} finished, but the current export "
                                         f"is {self.export_id} in state {self.state.value}")]
        effects = self._cancel(phase.timer)
        if failure is not None:
            return effects + self._export_failed(phase, failure)
        if self.notes is not None:
            self.notes.append(Delivered((phase.batch.id,)))
        self.phase = Idle()
        return effects + self._settle()

    def _export_failed(self, phase: Exporting, failure: FailureReason) -> list[Effect]:
        """The shell logs a failure that is retried (it knows the delay and the traceback)."""
        letters = isinstance(phase.batch, DeadLetters)
        if isinstance(failure, PermanentSinkError) and not letters:
            self.phase = Idle()
            parts = _isolate(phase.batch, failure)
            self.pending.extendleft(reversed(parts))
            if self.notes is not None:
                self.notes.append(Replaced(phase.batch.id, tuple(parts)))
            return [Log(logging.WARNING, f"batch {phase.batch.id} of "
                                         f"{plural(len(phase.batch), 'message')} "
                                         f"failed for some of them ({failure}): going on with "
                                         f"{' and '.join(_described(p) for p in parts)}"),
                    *self._settle()]
        if self.terminating and self.drains and (not letters or self._drainable):
            self.phase = Idle()
            self.pending.appendleft(phase.batch)  # dead letters stay for their export
            return [Log(logging.WARNING, f"export of {plural(len(phase.batch), 'message')} failed "
                                         f"({failure!r}) while stopping: draining what is "
                                         f"held"),
                    *self._drain()]
        timer = Timer(TimerKind.RETRY, self._issue())
        self.phase = RetryBackoff(phase.batch, phase.retry_num + 1, timer)
        return [ArmRetryTimer(timer, phase.retry_num + 1, failure)]

    def _start_export(self, batch: Batch, retry_num: int) -> list[Effect]:
        export_id = self._issue()
        effects: list[Effect] = [StartExport(export_id, batch, retry_num)]
        timer = None
        if self.export_timeout is not None:
            timer = Timer(TimerKind.EXPORT, self._issue())
            effects.append(ArmTimer(timer, self.export_timeout))
        self.phase = Exporting(export_id, batch, retry_num, timer)
        return effects

    # ---- termination --------------------------------------------------------------------

    def _stop_requested(self) -> list[Effect]:
        if isinstance(self.phase, Done):
            return [Finish()]
        if self.terminating:
            return []
        self.terminating = True
        if isinstance(self.phase, Idle):
            return self._settle()
        if isinstance(self.phase, RetryBackoff) and self.drains and self._drainable:
            return self._drain()
        return []  # an in-flight export may finish; a retry keeps its backoff

    def _exit_requested(self) -> list[Effect]:
        """A stop, as Pachka's (an export in flight may finish within `export_timeout`),
        bounded by `shutdown_timeout`."""
        if isinstance(self.phase, Done) or self.bound is not None:
            return []
        effects = self._stop_requested()
        if self.shutdown_timeout is not None and not isinstance(self.phase, Done):
            self.bound = Timer(TimerKind.SHUTDOWN, self._issue())
            effects.append(ArmTimer(self.bound, self.shutdown_timeout))
        return effects

    def _out_of_time(self) -> list[Effect]:
        """`shutdown_timeout` passed after a bare exit: drain what is left, else spill it or
        report it lost, and stop."""
        phase = self.phase
        self.bound = None
        effects: list[Effect] = []
        if self.credits:
            effects.append(Log(logging.INFO, f"gave up {len(self.credits)} open grants of room "
                                             f"({self.reserved} messages): their producers "
                                             f"report what they could not ship"))
            effects += self._cancel_credits()
        if isinstance(phase, Draining):
            phase.last_chance = True  # its end decides: delivered, else spilled or lost
            return effects
        effects += self._cancel(self.timer)
        if isinstance(phase, Exporting):
            effects.append(KillExport(phase.export_id))
        if isinstance(phase, Exporting | RetryBackoff):
            self.pending.appendleft(phase.batch)
        self.phase = Idle()
        if self.drains and self._drainable:
            return effects + self._drain(last_chance=True)
        return [*effects, *self._lose("not delivered within shutdown_timeout"), *self._finish()]

    def _drain_done(self, failure: BaseException | None) -> list[Effect]:
        phase = self.phase
        if not isinstance(phase, Draining):
            return [Log(logging.WARNING, f"drain finished in state {self.state.value}")]
        self.phase = Idle()
        if failure is None and self.notes is not None:
            self.notes.append(Delivered(tuple(b.id for b in phase.batches)))
        if failure is None and not phase.last_chance:
            return self._settle()
        if failure is None:  # out of time: dead letters waiting for their export too
            return [*self._lose("not delivered within shutdown_timeout"), *self._finish()]
        self.pending.extendleft(reversed(phase.batches))
        if phase.last_chance:
            return [*self._lose(f"drain_on_terminate failed ({failure!r})"), *self._finish()]
        # Lose nothing: export the messages batch by batch instead.
        self.drains = False
        return [Log(logging.ERROR, f"drain_on_terminate failed ({failure!r}); exporting "
                                   f"{self.held} messages through send_batch instead"),
                *self._settle()]

    # ---- helpers ------------------------------------------------------------------------

    def _settle(self) -> list[Effect]:
        """In Idle with its timer current: export, arm the batch timer, drain or stop."""
        phase = self.phase
        assert isinstance(phase, Idle)
        if self.terminating:
            effects = self._cancel(phase.timer)
            phase.timer = None
            if self.pending or self.queue:
                more = (self._drain() if self.drains and self._drainable
                        else self._start_export(self._take_batch(), 0))
                return effects + more
            if self.credits:
                return effects  # messages promised to producers are still on their way
            return effects + self._finish()
        if self.pending or len(self.queue) >= self.max_batch_size or (
                self.max_batch_bytes is not None and self.queue_bytes >= self.max_batch_bytes):
            effects = self._cancel(phase.timer)
            return effects + self._start_export(self._take_batch(), retry_num=0)
        if self.queue and phase.timer is None and self.max_batch_delay is not None:
            phase.timer = Timer(TimerKind.BATCH, self._issue())
            return [ArmTimer(phase.timer, self.max_batch_delay)]
        return []

    def _take_batch(self) -> Batch:
        """The first pending batch, else up to `max_batch_size` queued messages as a new one."""
        if self.pending:
            return self.pending.popleft()
        return self._new_batch()

    def _new_batch(self) -> Batch:
        """Queued messages as a batch with the next id: up to `max_batch_size`, and as many
        as fit in `max_batch_bytes`."""
        count = min(self.max_batch_size, len(self.queue))
        if self.measures:
            count = self._fitting(count)
            popsize = self.sizes.popleft
            self.queue_bytes -= sum(popsize() for _ in range(count))
        popleft = self.queue.popleft
        self._batches += 1
        batch = Batch((popleft() for _ in range(count)), f"{self.batch_prefix}{self._batches}")
        if self.notes is not None:
            self.notes.append(Formed(batch))
        return batch

    def _fitting(self, count: int) -> int:
        """How many of the first `count` queued messages fit in `max_batch_bytes` together
        (at least one: each fits alone)."""
        limit, total = self.max_batch_bytes, 0
        if limit is None:
            return count
        for taken, size in enumerate(islice(self.sizes, count)):
            total += size
            if total > limit:
                return taken
        return count

    def _drain(self, last_chance: bool = False) -> list[Effect]:
        """Hand everything held to `drain_on_terminate`: the batch in retry, pending, queued;
        not dead letters, which stay pending for `Sink.dead_letter`. What is queued is made
        into batches first, so that every message drained has a batch id (`Batch.parts`),
        kept if the drain fails: a ledger then sees what a killed drain had committed."""
        held = [*([self.phase.batch] if isinstance(self.phase, RetryBackoff) else []),
                *self.pending]
        while self.queue:
            held.append(self._new_batch())
        batches = [b for b in held if not isinstance(b, DeadLetters)]
        effects = self._cancel(self.timer)
        self.phase = Draining(batches, last_chance)
        self.pending = deque(b for b in held if isinstance(b, DeadLetters))
        self._batches += 1
        return [*effects, Drain(Batch(chain(*batches), f"{self.batch_prefix}{self._batches}",
                                      tuple((b.id, len(b)) for b in batches)))]

    @property
    def _drainable(self) -> bool:
        """Something `drain_on_terminate` takes: queued, pending or the batch in retry
        backoff, but for dead letters."""
        retrying = [self.phase.batch] if isinstance(self.phase, RetryBackoff) else []
        return bool(self.queue) or any(not isinstance(b, DeadLetters)
                                       for b in (*retrying, *self.pending))

    def _lose(self, why: str) -> list[Effect]:
        """What is held will not be delivered now: spilled where configured, else reported."""
        while self.queue:
            self.pending.append(self._new_batch())
        left, self.pending = list(self.pending), deque()
        if not left:
            return []
        if self.spills:
            return [Spill(left, why)]
        return [Lose(sum(map(len, left)), why)]

    def _restore(self, batches: Sequence[Batch],
                 sizes: Sequence[Sequence[int]] | None) -> list[Effect]:
        """Spilled or journaled batches go first, in order, under their ids; one beyond
        today's limits (the options changed) goes in parts "<id>.0", "<id>.1", ..."""
        restored: list[Batch] = []
        for n, batch in enumerate(batches):
            parts = self._parts(batch, [0] * len(batch) if sizes is None else sizes[n])
            restored += parts
            if self.notes is not None and (len(parts) > 1 or parts[0] is not batch):
                self.notes.append(Replaced(batch.id, tuple(parts)))
        self.pending.extendleft(reversed(restored))
        return self._settle() if isinstance(self.phase, Idle) else []

    def _parts(self, batch: Batch, sizes: Sequence[int]) -> list[Batch]:
        """`batch` in parts within `max_batch_size` and `max_batch_bytes`; a message larger
        than `max_batch_bytes` now, accepted under a larger one, is a part of its own, a
        dead letter (`Sink.dead_letter`): `send_batch` never gets it. Dead letters stay
        whole: they go to `dead_letter`, not `send_batch`."""
        if isinstance(batch, DeadLetters):
            return [batch]
        limit = self.max_batch_bytes
        groups: list[list[int]] = [[]]
        total, letters = 0, False
        for i, size in enumerate(sizes):
            alone = limit is not None and size > limit
            letters |= alone
            if alone or len(groups[-1]) == self.max_batch_size or (
                    limit is not None and total + size > limit):
                groups.append([])
                total = 0
            groups[-1].append(i)
            total += size
            if alone:  # nothing joins it
                groups.append([])
                total = 0
        groups = [group for group in groups if group]
        if len(groups) <= 1 and not letters:
            return [batch]
        parts: list[Batch] = []
        for n, group in enumerate(groups):
            part = Batch((batch[i] for i in group), f"{batch.id}.{n}")
            size = sizes[group[0]]
            parts.append(part if limit is None or size <= limit
                         else DeadLetters(part, MessageTooLarge(size, limit)))
        return parts

    def _cancel_credits(self) -> list[Effect]:
        effects: list[Effect] = []
        if self.credit_timeout is not None:
            effects = [CancelTimer(Timer(TimerKind.CREDIT, c)) for c in self.credits]
        self.credits.clear()
        self.credit_bytes.clear()
        self.reserved = self.reserved_bytes = 0
        return effects

    def _finish(self) -> list[Effect]:
        effects = self._cancel(self.bound)
        self.bound = None
        self.phase = Done()
        return [*effects, Finish()]

    @staticmethod
    def _cancel(timer: Timer | None) -> list[Effect]:
        return [] if timer is None else [CancelTimer(timer)]

    def _issue(self) -> int:
        self._serial += 1
        return self._serial


def _isolate(batch: Batch, failure: PermanentSinkError) -> list[Batch]:
    """What to export instead of a batch that failed for its messages: the messages the
    sink named (`indices`) as dead letters after the others; else the batch's two halves,
    to try apart (about log2(len) extra exports find each bad message); a message that
    fails alone is a dead letter."""
    named = {i for i in failure.indices or () if 0 <= i < len(batch)}
    if named:
        bad = sorted(named)
        good = Batch((m for i, m in enumerate(batch) if i not in named), f"{batch.id}.r")
        letters = DeadLetters(Batch((batch[i] for i in bad), f"{batch.id}.x"), failure)
        return [good, letters] if good else [letters]
    if len(batch) == 1:
        return [DeadLetters(batch, failure)]
    half = len(batch) // 2
    return [Batch(batch[:half], f"{batch.id}.0"), Batch(batch[half:], f"{batch.id}.1")]


def _described(batch: Batch) -> str:
    kind = "dead letter" if isinstance(batch, DeadLetters) else "message"
    return f"{batch.id} ({plural(len(batch), kind)})"
