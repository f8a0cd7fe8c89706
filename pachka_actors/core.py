"""The Pachka server's state machine, pure: events in, effects out.

No Thespian, no clock, no I/O (in the manner of h11's `_state.py`): the actor shell
in `server.py` turns messages into the events below and performs the effects the
machine returns. Timers and exports are named by tokens the machine issues itself,
because Thespian wakeups cannot be cancelled and exporter addresses get reused:
an event carrying a token that is no longer current is stale and ignored.

States follow Pachka's server: `IDLE` (accumulating; a batch timer runs while
messages wait), `EXPORTING` (one exporter in flight, guarded by the export timer),
`RETRY_BACKOFF` (the failed batch waits for the retry timer). `terminating` is a
flag on top of them, as in Pachka's termination mode; `DRAINING` waits for the
sink's `drain_on_terminate` and `STOPPED` is final.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from .errors import Overloaded
from .messages import Accepted, Granted, ServerStatus, State, Stopped, TimerFired, TimerKind
from .sink import KILLED, FailureReason

# ---- events -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MessagesReceived:
    """Messages to queue. Under `credit` (a grant's id) they were promised a place already:
    all are taken, and the grant is closed, its unused credits returned."""

    messages: Sequence[Any]
    credit: int | None = None


@dataclass(frozen=True)
class CreditRequested:
    """A producer asks for room for `count` messages it will buffer and ship later."""

    count: int


@dataclass(frozen=True)
class ExportFinished:
    """The exporter of `export_id` is done: `failure` is None on success."""

    export_id: int
    failure: FailureReason | None = None


@dataclass(frozen=True)
class StopRequested:
    pass


@dataclass(frozen=True)
class DrainFinished:
    """`drain_on_terminate` returned (`failure` None) or raised."""

    failure: BaseException | None = None


Event = (MessagesReceived | CreditRequested | TimerFired | ExportFinished | StopRequested
         | DrainFinished)


# ---- effects ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmTimer:
    kind: TimerKind
    token: int
    delay: float


@dataclass(frozen=True)
class ArmRetryTimer:
    """The shell asks the sink's `retry_timeout` for the delay: user code stays out of here."""

    token: int
    retry_num: int
    failure: FailureReason


@dataclass(frozen=True)
class StartExport:
    export_id: int
    batch: list[Any]
    retry_num: int


@dataclass(frozen=True)
class KillExport:
    export_id: int


@dataclass(frozen=True)
class Drain:
    messages: list[Any]


@dataclass(frozen=True)
class Log:
    level: int
    text: str


Effect = (Accepted | Granted | ArmTimer | ArmRetryTimer | StartExport | KillExport | Drain
          | Stopped | Log)


class PachkaCore:
    """One Pachka server's state. `handle` mutates it and returns the effects to perform."""

    def __init__(
        self,
        *,
        max_batch_size: int,
        critical_queue_size: int,
        max_batch_delay: float | None,
        export_timeout: float | None,
        credit_timeout: float | None = None,
        drains: bool,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.critical_queue_size = critical_queue_size
        self.max_batch_delay = max_batch_delay
        self.export_timeout = export_timeout
        self.credit_timeout = credit_timeout
        #: The sink has drain_on_terminate; cleared if it fails, to fall back to exporting.
        self.drains = drains
        self.state = State.IDLE
        self.terminating = False
        self.queue: deque[Any] = deque()
        #: The batch in flight, waiting for its retry, or handed to drain_on_terminate.
        self.batch: list[Any] = []
        self.retry_num = 0
        self.export_id: int | None = None
        self.timer: TimerFired | None = None
        #: Open grants (id: credits) and their sum: room promised to producers' buffers.
        self.credits: dict[int, int] = {}
        self.reserved = 0
        self._serial = 0

    def status(self) -> ServerStatus:
        return ServerStatus(self.state, self.terminating, len(self.queue), len(self.batch),
                            self.reserved, self.retry_num, self.timer, self.export_id)

    def handle(self, event: Event) -> list[Effect]:
        match event:
            case MessagesReceived(messages, None):
                return self._receive(messages)
            case MessagesReceived(messages, int() as credit):
                return self._receive_credited(messages, credit)
            case CreditRequested(count):
                return self._grant(count)
            case TimerFired():
                return self._timer_fired(event)
            case ExportFinished(export_id, failure):
                return self._export_finished(export_id, failure)
            case StopRequested():
                return self._stop_requested()
            case DrainFinished(failure):
                return self._drain_finished(failure)
        raise TypeError(f"not a core event: {event!r}")

    # ---- transitions --------------------------------------------------------------------

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
        if self.state is State.IDLE and count:
            effects += self._settle()
        return effects

    def _receive_credited(self, messages: Sequence[Any], credit: int) -> list[Effect]:
        """Promised messages are never refused, even past an expired grant or a stop."""
        if self.state is State.STOPPED:
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
            if len(messages) > granted:
                effects.append(Log(logging.ERROR, f"credit {credit} was for {granted} messages, "
                                                  f"{len(messages)} came; taking them all"))
        self.queue.extend(messages)
        if self.state is State.IDLE:
            effects += self._settle()
        return effects

    def _grant(self, count: int) -> list[Effect]:
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

    def _credit_expired(self, credit: int) -> list[Effect]:
        """A producer that neither shipped nor returned its credits (crashed?) frees them."""
        granted = self.credits.pop(credit, None)
        if granted is None:
            return [Log(logging.DEBUG, f"credit {credit} was used before its timer fired")]
        self.reserved -= granted
        effects: list[Effect] = [Log(logging.WARNING, f"credit {credit} for {granted} messages "
                                                      f"expired unused")]
        if self.state is State.IDLE and self.terminating:
            effects += self._settle()
        return effects

    def _timer_fired(self, fired: TimerFired) -> list[Effect]:
        if fired.kind is TimerKind.CREDIT:
            return self._credit_expired(fired.token)
        if fired != self.timer:
            return [self._stale(fired)]
        self.timer = None
        if fired.kind is TimerKind.BATCH:
            return self._start_export(self._take_batch(), retry_num=0)
        if fired.kind is TimerKind.EXPORT:
            assert self.export_id is not None
            return [KillExport(self.export_id), *self._export_failed(KILLED)]
        return self._start_export(self.batch, self.retry_num)  # the retry timer

    def _stale(self, fired: TimerFired) -> Log:
        """Thespian cannot cancel a wakeup, so a superseded timer firing is routine."""
        if fired.token <= self._serial and (self.timer is None or fired.token != self.timer.token):
            return Log(logging.DEBUG, f"superseded {fired.kind.value} timer {fired.token} "
                                      f"ignored in state {self.state.value}")
        return Log(logging.WARNING, f"{fired.kind.value} timeout {fired.token} received in wrong "
                                    f"state {self.state.value} (current timer: {self.timer})")

    def _export_finished(self, export_id: int, failure: FailureReason | None) -> list[Effect]:
        if self.state is not State.EXPORTING or export_id != self.export_id:
            return [Log(logging.WARNING, f"export {export_id} finished, but the current export "
                                         f"is {self.export_id} in state {self.state.value}")]
        self.timer = None
        if failure is not None:
            return self._export_failed(failure)
        self.batch, self.retry_num, self.export_id = [], 0, None
        self.state = State.IDLE
        return self._settle()

    def _export_failed(self, failure: FailureReason) -> list[Effect]:
        self.export_id = None
        log = Log(logging.WARNING, f"export of {len(self.batch)} messages failed "
                                   f"(retry {self.retry_num}): {failure!r}")
        if self.terminating and self.drains:
            return [log, *self._drain()]
        self.retry_num += 1
        self.state = State.RETRY_BACKOFF
        token = self._issue()
        self.timer = TimerFired(TimerKind.RETRY, token)
        return [log, ArmRetryTimer(token, self.retry_num, failure)]

    def _stop_requested(self) -> list[Effect]:
        if self.state is State.STOPPED:
            return [Stopped()]
        if self.terminating:
            return []
        self.terminating = True
        if self.state is State.IDLE:
            return self._settle()
        if self.state is State.RETRY_BACKOFF and self.drains:
            return self._drain()
        return []  # an in-flight export may finish; a retry keeps its backoff

    def _drain_finished(self, failure: BaseException | None) -> list[Effect]:
        if self.state is not State.DRAINING:
            return [Log(logging.WARNING, f"drain finished in state {self.state.value}")]
        if failure is None:
            self.batch = []
            self.state = State.IDLE
            return self._settle()
        # Lose nothing: put the messages back and export them batch by batch instead.
        self.drains = False
        self.queue.extendleft(reversed(self.batch))  # ahead of what came during the drain
        self.batch = []
        self.state = State.IDLE
        return [Log(logging.ERROR, f"drain_on_terminate failed ({failure!r}); exporting "
                                   f"{len(self.queue)} messages through send_batch instead"),
                *self._settle()]

    # ---- helpers ------------------------------------------------------------------------

    def _settle(self) -> list[Effect]:
        """In IDLE with the timer state current: export, arm the batch timer, drain or stop."""
        if self.terminating:
            if self.queue:
                return self._drain() if self.drains else self._start_export(self._take_batch(), 0)
            if self.credits:
                return []  # messages promised to producers are still on their way
            return self._stopped()
        if len(self.queue) >= self.max_batch_size:
            return self._start_export(self._take_batch(), retry_num=0)
        if self.queue and self.timer is None and self.max_batch_delay is not None:
            token = self._issue()
            self.timer = TimerFired(TimerKind.BATCH, token)
            return [ArmTimer(TimerKind.BATCH, token, self.max_batch_delay)]
        return []

    def _take_batch(self) -> list[Any]:
        size = min(self.max_batch_size, len(self.queue))
        popleft = self.queue.popleft
        return [popleft() for _ in range(size)]

    def _start_export(self, batch: list[Any], retry_num: int) -> list[Effect]:
        self.state = State.EXPORTING
        self.batch, self.retry_num = batch, retry_num
        self.export_id = self._issue()
        effects: list[Effect] = [StartExport(self.export_id, batch, retry_num)]
        self.timer = None
        if self.export_timeout is not None:
            token = self._issue()
            self.timer = TimerFired(TimerKind.EXPORT, token)
            effects.append(ArmTimer(TimerKind.EXPORT, token, self.export_timeout))
        return effects

    def _drain(self) -> list[Effect]:
        messages = self.batch + list(self.queue)
        self.queue.clear()
        self.timer = None
        self.batch = messages
        self.state = State.DRAINING
        return [Drain(messages)]

    def _stopped(self) -> list[Effect]:
        self.state = State.STOPPED
        self.timer = None
        return [Stopped()]

    def _issue(self) -> int:
        self._serial += 1
        return self._serial
