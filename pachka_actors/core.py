"""The Pachka server's state machine, pure: events in, effects out.

No Thespian, no clock, no I/O (in the manner of h11's `_state.py`): the actor shell
in `server.py` turns messages into the events below and performs the effects the
machine returns. Timers and exports are named by tokens the machine issues itself,
because exporter addresses get reused; the machine cancels (`CancelTimer`) every
timer it supersedes, so a timer or result that still comes stale is an anomaly and
is logged at WARNING, as Pachka does.

One small record per state, as Pachka's `state.ex`: `Idle` (accumulating; a batch
timer runs while messages wait), `Exporting` (one exporter in flight, guarded by the
export timer), `RetryBackoff` (the failed batch waits for the retry timer),
`Draining` (in `drain_on_terminate`) and the final `Done`. `terminating` is a flag
on top of them, as Pachka's termination mode; `finishing` narrows it to a bare
`ActorExitRequest`, when the shell can receive nothing more and performs every
effect before its handler returns (see `ExitRequested`).

Longer than this project's ~400-line guide on purpose: it is one machine, and its
transitions (producers' credits, timers, exports, stopping, finishing) read
together, as they do in Pachka's `server.ex`; its vocabulary is in `_core_events`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from ._core_events import (
    ArmRetryTimer,
    ArmTimer,
    CancelTimer,
    CreditRequested,
    Drain,
    DrainFinished,
    Effect,
    Event,
    ExitRequested,
    ExportFinished,
    KillExport,
    Log,
    MessagesReceived,
    Reply,
    Restored,
    Spill,
    StartExport,
    StopRequested,
)
from .errors import Overloaded
from .messages import Accepted, Granted, ServerStatus, State, Stopped, TimerFired, TimerKind
from .sink import KILLED, FailureReason

__all__ = [
    "ArmRetryTimer",
    "ArmTimer",
    "CancelTimer",
    "CreditRequested",
    "Done",
    "Drain",
    "DrainFinished",
    "Draining",
    "Effect",
    "Event",
    "ExitRequested",
    "ExportFinished",
    "Exporting",
    "Idle",
    "KillExport",
    "Log",
    "MessagesReceived",
    "PachkaCore",
    "Phase",
    "Reply",
    "Restored",
    "RetryBackoff",
    "Spill",
    "StartExport",
    "StopRequested",
]

# ---- states -----------------------------------------------------------------------------


@dataclass
class Idle:
    timer: TimerFired | None = None  # the batch timer, while messages wait


@dataclass
class Exporting:
    export_id: int
    batch: list[Any]
    retry_num: int
    timer: TimerFired | None  # the export timer (None: no export_timeout)


@dataclass
class RetryBackoff:
    batch: list[Any]
    retry_num: int
    timer: TimerFired


@dataclass
class Draining:
    batch: list[Any]


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
    #: What cannot be delivered in time goes to a spill file (`Spill`) instead of being lost.
    spills: bool = False
    phase: Phase = field(default_factory=Idle)
    terminating: bool = False
    finishing: bool = False
    queue: deque[Any] = field(default_factory=deque)
    #: Open grants (id: credits) and their sum: room promised to producers' buffers.
    credits: dict[int, int] = field(default_factory=dict)
    reserved: int = 0
    #: Credit requests waiting for room, in turn: (requester, count, wait timer token).
    waiting: deque[tuple[Any, int, int]] = field(default_factory=deque)
    #: `shutdown_timeout` passed while finishing: what is left is drained or lost now.
    late: bool = False
    _serial: int = 0
    _finish_timer: TimerFired | None = None

    # ---- views --------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return _STATES[type(self.phase)]

    @property
    def batch(self) -> list[Any]:
        """The batch in flight, waiting for its retry, or handed to drain_on_terminate."""
        return getattr(self.phase, "batch", [])

    @property
    def retry_num(self) -> int:
        return getattr(self.phase, "retry_num", 0)

    @property
    def export_id(self) -> int | None:
        return getattr(self.phase, "export_id", None)

    @property
    def timer(self) -> TimerFired | None:
        return getattr(self.phase, "timer", None)

    def status(self) -> ServerStatus:
        return ServerStatus(self.state, self.terminating, len(self.queue), len(self.batch),
                            self.reserved, self.retry_num, self.timer, self.export_id)

    def handle(self, event: Event) -> list[Effect]:
        effects = self._step(event)
        if self.waiting:  # room may have freed: waiting producers are served first
            effects += self._serve_waiting()
        return effects

    def _step(self, event: Event) -> list[Effect]:
        match event:
            case MessagesReceived(messages, None):
                return self._receive(messages)
            case MessagesReceived(messages, int() as credit):
                return self._receive_credited(messages, credit)
            case CreditRequested(count, wait, requester):
                return self._grant(count, wait, requester)
            case TimerFired():
                return self._timer_fired(event)
            case ExportFinished(export_id, failure):
                return self._export_finished(export_id, failure)
            case StopRequested():
                return self._stop_requested()
            case ExitRequested():
                return self._exit_requested()
            case DrainFinished(failure):
                return self._drain_finished(failure)
            case Restored(messages):
                return self._restored(messages)
        raise TypeError(f"not a core event: {event!r}")

    # ---- producers ----------------------------------------------------------------------

    def _room(self, wanted: int) -> tuple[int, Overloaded | None]:
        """How many of `wanted` fit beside the queue and the open grants, and why not more."""
        if self.terminating:
            return 0, Overloaded("server is terminating", terminating=True)
        room = max(0, min(wanted, self.critical_queue_size - len(self.queue) - self.reserved))
        if room < wanted:
            return room, Overloaded(f"queue is at critical_queue_size={self.critical_queue_size}")
        return room, None

    def _receive(self, messages: Sequence[Any]) -> list[Effect]:
        count, refused = self._room(len(messages))
        self.queue.extend(messages if count == len(messages) else islice(messages, count))
        effects: list[Effect] = [Accepted(count, refused)]
        if isinstance(self.phase, Idle) and count:
            effects += self._settle()
        return effects

    def _receive_credited(self, messages: Sequence[Any], credit: int) -> list[Effect]:
        """Promised messages are never refused, even past an expired grant or a stop."""
        if isinstance(self.phase, Done):
            return [Accepted(0), Log(logging.ERROR, f"{len(messages)} messages under credit "
                                                    f"{credit} came after the server stopped")]
        effects: list[Effect] = [Accepted(len(messages))]
        granted = self.credits.pop(credit, None)
        if granted is None:
            effects.append(Log(logging.WARNING, f"credit {credit} expired before its "
                                                f"{len(messages)} messages came; taking them "
                                                f"beyond critical_queue_size"))
        else:
            self.reserved -= granted
            if self.credit_timeout is not None:
                effects.append(CancelTimer(credit))
            if len(messages) > granted:
                effects.append(Log(logging.ERROR, f"credit {credit} was for {granted} messages, "
                                                  f"{len(messages)} came; taking them all"))
        self.queue.extend(messages)
        if isinstance(self.phase, Idle):
            effects += self._settle()
        return effects

    def _restored(self, messages: Sequence[Any]) -> list[Effect]:
        """A previous server's spill: accepted long ago, so taken whole, ahead of new ones."""
        self.queue.extendleft(reversed(messages))
        return self._settle() if isinstance(self.phase, Idle) else []

    def _grant(self, count: int, wait: float = 0.0, requester: Any = None) -> list[Effect]:
        if wait > 0 and not self.terminating and (self.waiting or not self._room(count)[0]):
            token = self._issue()
            self.waiting.append((requester, count, token))
            return [ArmTimer(TimerKind.WAIT, token, wait)]
        return self._open_credit(count)

    def _open_credit(self, count: int) -> list[Effect]:
        granted, refused = self._room(count)
        if not granted:
            return [Granted(None, 0, refused)]
        credit = self._issue()
        self.credits[credit] = granted
        self.reserved += granted
        effects: list[Effect] = [Granted(credit, granted, refused)]
        if self.credit_timeout is not None:
            effects.append(ArmTimer(TimerKind.CREDIT, credit, self.credit_timeout))
        return effects

    def _serve_waiting(self) -> list[Effect]:
        """Answer waiting credit requests, in turn, while there is room (or refuse them all
        once the server terminates)."""
        effects: list[Effect] = []
        while self.waiting and (self.terminating or self._room(1)[0]):
            requester, count, token = self.waiting.popleft()
            effects.append(CancelTimer(token))
            opened = self._open_credit(count)
            effects += [Reply(requester, e) if isinstance(e, Granted) else e for e in opened]
        return effects

    def _wait_expired(self, token: int) -> list[Effect]:
        for waiter in self.waiting:
            if waiter[2] == token:
                self.waiting.remove(waiter)
                refused = Overloaded(f"queue stayed at critical_queue_size="
                                     f"{self.critical_queue_size} while the request waited")
                return [Reply(waiter[0], Granted(None, 0, refused))]
        return [Log(logging.WARNING, f"wait timeout {token} for no waiting request")]

    def _credit_expired(self, credit: int) -> list[Effect]:
        """A producer that neither shipped nor returned its credits (crashed?) frees them."""
        granted = self.credits.pop(credit, None)
        if granted is None:
            return [Log(logging.WARNING, f"credit timeout {credit} for no open credit")]
        self.reserved -= granted
        effects: list[Effect] = [Log(logging.WARNING, f"credit {credit} for {granted} messages "
                                                      f"expired unused")]
        if isinstance(self.phase, Idle) and self.terminating:
            effects += self._settle()
        return effects

    # ---- timers and exports -------------------------------------------------------------

    def _timer_fired(self, fired: TimerFired) -> list[Effect]:
        if fired.kind is TimerKind.CREDIT:
            return self._credit_expired(fired.token)
        if fired.kind is TimerKind.WAIT:
            return self._wait_expired(fired.token)
        if fired.kind is TimerKind.SHUTDOWN and fired == self._finish_timer:
            return self._out_of_time()
        phase = self.phase
        if fired != self.timer:
            current = getattr(phase, "export_id", None)
            return [Log(logging.WARNING, f"{fired.kind.value} timeout {fired.token} received in "
                                         f"wrong state {self.state.value} (current timer: "
                                         f"{self.timer}, current export: {current})")]
        if isinstance(phase, Idle):
            phase.timer = None
            return self._start_export(self._take_batch(), retry_num=0)
        if isinstance(phase, Exporting):
            phase.timer = None
            return [KillExport(phase.export_id), *self._export_failed(phase, KILLED)]
        assert isinstance(phase, RetryBackoff)
        return self._start_export(phase.batch, phase.retry_num)

    def _export_finished(self, export_id: int, failure: FailureReason | None) -> list[Effect]:
        phase = self.phase
        if not isinstance(phase, Exporting) or export_id != phase.export_id:
            return [Log(logging.WARNING, f"export {export_id} finished, but the current export "
                                         f"is {self.export_id} in state {self.state.value}")]
        effects = self._cancel(phase.timer)
        if failure is not None:
            return effects + self._export_failed(phase, failure)
        self.phase = Idle()
        return effects + self._settle()

    def _export_failed(self, phase: Exporting, failure: FailureReason) -> list[Effect]:
        """The shell logs a failure that is retried (it knows the delay and the traceback)."""
        if self.terminating and self.drains:
            self.phase = Idle()
            self.queue.extendleft(reversed(phase.batch))
            return [Log(logging.WARNING, f"export of {len(phase.batch)} messages failed "
                                         f"({failure!r}) while stopping: draining them"),
                    *self._drain()]
        retry_num = phase.retry_num + 1
        timer = TimerFired(TimerKind.RETRY, self._issue())
        self.phase = RetryBackoff(phase.batch, retry_num, timer)
        return [ArmRetryTimer(timer.token, retry_num, failure)]

    def _start_export(self, batch: list[Any], retry_num: int) -> list[Effect]:
        export_id = self._issue()
        spare = not self.terminating or bool(self.queue)
        effects: list[Effect] = [StartExport(export_id, batch, retry_num, self.finishing, spare)]
        timer = None
        if self.export_timeout is not None:
            timer = TimerFired(TimerKind.EXPORT, self._issue())
            effects.append(ArmTimer(TimerKind.EXPORT, timer.token, self.export_timeout))
        self.phase = Exporting(export_id, batch, retry_num, timer)
        return effects

    # ---- termination --------------------------------------------------------------------

    def _stop_requested(self) -> list[Effect]:
        if isinstance(self.phase, Done):
            return [Stopped()]
        if self.terminating:
            return []
        self.terminating = True
        if isinstance(self.phase, Idle):
            return self._settle()
        if isinstance(self.phase, RetryBackoff) and self.drains:
            return self._drain()
        return []  # an in-flight export may finish; a retry keeps its backoff

    def _exit_requested(self) -> list[Effect]:
        if isinstance(self.phase, Done) or self.finishing:
            return []
        self.terminating = self.finishing = True
        effects: list[Effect] = []
        if self.credits:
            effects.append(Log(logging.ERROR, f"exiting: {self.reserved} messages promised "
                                              f"to {len(self.credits)} producers can no "
                                              f"longer be received: those shipped from now on "
                                              f"are lost (stop producers before their server)"))
            if self.credit_timeout is not None:
                effects += [CancelTimer(credit) for credit in self.credits]
            self.credits.clear()
            self.reserved = 0
        if self.shutdown_timeout is not None:
            self._finish_timer = TimerFired(TimerKind.SHUTDOWN, self._issue())
            effects.append(ArmTimer(TimerKind.SHUTDOWN, self._finish_timer.token,
                                    self.shutdown_timeout))
        phase = self.phase
        if isinstance(phase, Exporting | RetryBackoff):  # no backoff helps now
            retry_num = phase.retry_num
            if isinstance(phase, Exporting):
                retry_num += 1
                effects += [KillExport(phase.export_id),
                            Log(logging.WARNING, f"exiting: killed the export of "
                                                 f"{len(phase.batch)} messages to redo it now")]
            if self.drains:
                return effects + self._drain()
            return [*effects, *self._cancel(phase.timer),
                    *self._start_export(phase.batch, retry_num)]
        return effects + self._settle()

    def _out_of_time(self) -> list[Effect]:
        """`shutdown_timeout` passed while finishing: drain what is left, or report it lost."""
        phase, effects = self.phase, []
        self._finish_timer, self.late = None, True
        if isinstance(phase, Exporting):
            effects += [*self._cancel(phase.timer), KillExport(phase.export_id)]
        elif isinstance(phase, RetryBackoff):
            effects += self._cancel(phase.timer)
        elif isinstance(phase, Draining | Done):
            return []
        self.queue.extendleft(reversed(self.batch))
        self.phase = Idle()
        if self.drains:
            return effects + self._drain()
        return [*effects, *self._lose("not delivered within shutdown_timeout"), *self._stopped()]

    def _drain_finished(self, failure: BaseException | None) -> list[Effect]:
        phase = self.phase
        if not isinstance(phase, Draining):
            return [Log(logging.WARNING, f"drain finished in state {self.state.value}")]
        self.phase = Idle()
        if failure is None:
            return self._settle()
        if self.late:
            self.queue.extendleft(reversed(phase.batch))
            return [*self._lose(f"drain_on_terminate failed ({failure!r})"), *self._stopped()]
        # Lose nothing: put the messages back and export them batch by batch instead.
        self.drains = False
        self.queue.extendleft(reversed(phase.batch))  # ahead of what came during the drain
        return [Log(logging.ERROR, f"drain_on_terminate failed ({failure!r}); exporting "
                                   f"{len(self.queue)} messages through send_batch instead"),
                *self._settle()]

    # ---- helpers ------------------------------------------------------------------------

    def _settle(self) -> list[Effect]:
        """In Idle with its timer current: export, arm the batch timer, drain or stop."""
        phase = self.phase
        assert isinstance(phase, Idle)
        if self.terminating:
            effects = self._cancel(phase.timer)
            phase.timer = None
            if self.queue:
                more = self._drain() if self.drains else self._start_export(self._take_batch(), 0)
                return effects + more
            if self.credits:
                return effects  # messages promised to producers are still on their way
            return effects + self._stopped()
        if len(self.queue) >= self.max_batch_size:
            effects = self._cancel(phase.timer)
            return effects + self._start_export(self._take_batch(), retry_num=0)
        if self.queue and phase.timer is None and self.max_batch_delay is not None:
            phase.timer = TimerFired(TimerKind.BATCH, self._issue())
            return [ArmTimer(TimerKind.BATCH, phase.timer.token, self.max_batch_delay)]
        return []

    def _take_batch(self) -> list[Any]:
        size = min(self.max_batch_size, len(self.queue))
        popleft = self.queue.popleft
        return [popleft() for _ in range(size)]

    def _drain(self) -> list[Effect]:
        messages = self.batch + list(self.queue)
        effects = self._cancel(self.timer)
        self.queue.clear()
        self.phase = Draining(messages)
        return [*effects, Drain(messages)]

    def _lose(self, why: str) -> list[Effect]:
        """What is left will not be delivered now: spilled where configured, else reported."""
        left, self.queue = list(self.queue), deque()
        if not left:
            return []
        if self.spills:
            return [Spill(left, why)]
        return [Log(logging.ERROR, f"{len(left)} accepted messages lost: {why}")]

    def _stopped(self) -> list[Effect]:
        effects = [] if self._finish_timer is None else [CancelTimer(self._finish_timer.token)]
        self._finish_timer = None
        self.phase = Done()
        return [*effects, Stopped()]

    @staticmethod
    def _cancel(timer: TimerFired | None) -> list[Effect]:
        return [] if timer is None else [CancelTimer(timer.token)]

    def _issue(self) -> int:
        self._serial += 1
        return self._serial
