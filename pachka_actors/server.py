"""The actor shell of a Pachka server: it runs a `PachkaCore` and only translates.

Thespian messages become core events; core effects become replies, timers (kept
in `Timers`, behind few Thespian wakeups), exports (through `ExporterPool`) and
calls of the sink's `drain_on_terminate`. All decisions are the core's: even a
bare `ActorExitRequest`, after which nothing more can be received, is the core's
`ExitRequested`, whose effects this shell performs before its handler returns.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from thespian.actors import (
    Actor,
    ActorAddress,
    ActorExitRequest,
    ChildActorExited,
    PoisonMessage,
    WakeupMessage,
)

from . import _spill
from ._ask import Caller
from ._exporters import ExporterPool, ExporterStarted
from ._timers import Timers
from .config import PachkaConfig, capabilities_satisfy
from .core import (
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
    PachkaCore,
    Reply,
    Restored,
    Spill,
    StartExport,
    StopRequested,
)
from .errors import AlreadyStarted, ConfigError, NotStarted
from .messages import (
    Accepted,
    CheckLoadable,
    GetStats,
    GetStatus,
    Granted,
    RequestCredit,
    SendMessage,
    SendMessages,
    Started,
    StartServer,
    State,
    Stop,
    Stopped,
    TimerFired,
    TimerKind,
)
from .metrics import Metrics
from .sink import EXITED, DrainingSink, FailureReason, Sink

log = logging.getLogger(__name__)


def retry_delay(sink: Sink, retry_num: int, failure: FailureReason, server_value: Any) -> float:
    """The sink's `retry_timeout`, or Pachka's default when it raises or answers nonsense."""
    try:
        delay = sink.retry_timeout(retry_num, failure, server_value)
        if isinstance(delay, timedelta):
            delay = delay.total_seconds()
        if isinstance(delay, int | float) and not isinstance(delay, bool) and delay >= 0:
            return float(delay)
        log.error("retry_timeout returned %r; using %s s", delay, retry_num)
    except Exception:
        log.exception("retry_timeout raised; using %s s", retry_num)
    return float(retry_num)


@dataclass
class _Running:
    config: PachkaConfig
    core: PachkaCore
    pool: ExporterPool
    metrics: Metrics
    timers: Timers = field(default_factory=Timers)
    stop_requesters: list[Caller] = field(default_factory=list)
    failure_detail: str | None = None  # the traceback of the last failed export, if any
    exiting: bool = False  # in the ActorExitRequest handler: nothing more is received
    watching: bool = False  # a liveness wakeup is pending


#: The payload of the wakeups that look for exporters that died unreported.
_LIVENESS = "pachka-exporter-liveness"
#: Seconds between those looks while an export runs.
LIVENESS_INTERVAL = 0.25


class PachkaServer(Actor):  # type: ignore[misc]
    """One Pachka server. Start it with `Pachka.start` or send it `StartServer(config)`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._run: _Running | None = None

    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict[str, Any],
                                   requirements: dict[str, Any]) -> bool:
        """Placement (`requirements=`): only on an admin with every required capability.
        Its exporters have no check, so Thespian forks them beside it, where they can be killed."""
        return capabilities_satisfy(capabilities, requirements)

    def receiveMessage(self, message: Any, address: ActorAddress) -> None:
        message, sender = Caller.of(message, address)
        run = self._run
        if run is None:
            self._unstarted(message, sender)
            return
        if not isinstance(message, ActorExitRequest):
            for export_id in run.pool.dead():  # Thespian did not report these deaths
                self._handle(run, ExportFinished(export_id, EXITED), Caller(self.myAddress))
        self._dispatch(run, message, sender)
        if run.pool.watching() and not run.watching and not run.exiting:
            run.watching = True
            self.wakeupAfter(timedelta(seconds=LIVENESS_INTERVAL), payload=_LIVENESS)

    def _dispatch(self, run: _Running, message: Any, sender: Caller) -> None:
        if isinstance(message, SendMessage):
            self._handle(run, MessagesReceived((message.message,)), sender)
        elif isinstance(message, SendMessages):
            self._handle(run, MessagesReceived(message.messages, message.credit), sender)
        elif isinstance(message, RequestCredit):
            self._handle(run, CreditRequested(message.count, message.wait, sender), sender)
        elif isinstance(message, ExportFinished):
            run.pool.finished(message)
            self._handle(run, message, sender)
        elif isinstance(message, ExporterStarted):
            run.pool.started(message)
        elif isinstance(message, WakeupMessage):
            if message.payload == _LIVENESS:
                run.watching = False  # the look itself happened before this dispatch
            else:
                self._timers_due(run, sender)
        elif isinstance(message, TimerFired):
            self._handle(run, message, sender)
        elif isinstance(message, Stop):
            run.stop_requesters.append(sender)
            self._handle(run, StopRequested(), sender)
        elif isinstance(message, GetStatus):
            self._answer(sender, run.core.status())
        elif isinstance(message, CheckLoadable):
            self._answer(sender, Accepted(len(message.messages)))
        elif isinstance(message, GetStats):
            self._answer(sender, run.metrics.stats())
        elif isinstance(message, ChildActorExited):
            export_id = run.pool.exited(message.childAddress)
            if export_id is not None:  # it died before its result came
                self._handle(run, ExportFinished(export_id, EXITED), sender)
        elif isinstance(message, ActorExitRequest):
            self._exit(run, sender)
        elif isinstance(message, StartServer):
            self._answer(sender, AlreadyStarted(run.config.name or str(self.myAddress)))
        elif isinstance(message, PoisonMessage):
            log.error("a message could not be handled: %r", message.poisonMessage)
        else:
            log.warning("Pachka server ignores unknown message %r", message)

    def _answer(self, caller: Caller, reply: Any) -> None:
        self.send(caller.address, caller.answer(reply))

    def _unstarted(self, message: Any, sender: Caller) -> None:
        if isinstance(message, StartServer):
            if message.config is None:
                self._refuse_unloadable(message, sender)
            else:
                self._start(message.config, sender)
        elif not isinstance(message, ActorExitRequest | ChildActorExited | WakeupMessage):
            self._answer(sender, NotStarted(f"{self.myAddress} is not a started Pachka server"))

    def _refuse_unloadable(self, message: StartServer, sender: Caller) -> None:
        """Answer at once, naming the cause, and exit: nothing is left running."""
        self._answer(sender, ConfigError(
                "sink", f"the server's process cannot load the config ({message.unloadable}): "
                        f"define the sink and what it holds at module level in an importable "
                        f"module (a class defined in __main__ after ActorSystem() started is "
                        f"not there)"))
        self.send(self.myAddress, ActorExitRequest())

    def _start(self, config: PachkaConfig, sender: Caller) -> None:
        core = PachkaCore(
            max_batch_size=config.max_batch_size,
            critical_queue_size=config.critical_queue_size,
            max_batch_delay=config.max_batch_delay,
            export_timeout=config.export_timeout,
            credit_timeout=config.credit_timeout,
            shutdown_timeout=config.shutdown_timeout,
            drains=isinstance(config.sink, DrainingSink),
            spills=config.spill_path is not None,
        )
        status = core.status
        metrics = Metrics(config.name or str(self.myAddress), config.meter_provider,
                          lambda: (status().queue_length, status().batch_length))
        try:
            spilled = _spill.take(config.spill_path) if config.spill_path else []
        except Exception as exc:
            self._answer(sender, ConfigError("spill_path", f"cannot read {config.spill_path}: "
                                                           f"{exc!r}"))
            self.send(self.myAddress, ActorExitRequest())
            return
        pool = ExporterPool(self, config.sink, config.server_value, config.batches_per_exporter)
        run = self._run = _Running(config, core, pool, metrics)
        run.pool.prepare()
        self._answer(sender, Started(self.myAddress))
        if spilled:
            log.warning("Pachka %s: sending %d messages spilled to %s by an earlier server "
                        "first", config.name or self.myAddress, len(spilled), config.spill_path)
            self._handle(run, Restored(spilled), sender)

    def _handle(self, run: _Running, event: Event, sender: Caller) -> None:
        """The one effect loop: perform the core's effects, in order, feeding back the
        events that performing some of them produces at once."""
        config = run.config
        effects: deque[Effect] = deque(self._step(run, event))
        while effects:
            result: Event | None = None
            match effects.popleft():
                case Accepted() | Granted() as reply:
                    self._answer(sender, reply)
                case Reply(to, reply):
                    self._answer(to, reply)
                case ArmTimer(kind, token, delay):
                    self._arm(run, TimerFired(kind, token), delay)
                case ArmRetryTimer(token, retry_num, failure):
                    delay = retry_delay(config.sink, retry_num, failure, config.server_value)
                    self._log_failure(run, retry_num, failure, delay)
                    self._arm(run, TimerFired(TimerKind.RETRY, token), delay)
                case CancelTimer(token):
                    run.timers.cancel(token)
                case StartExport(export_id, batch, _, now, spare):
                    if now:
                        run.pool.start_now(export_id, batch)
                    else:
                        run.pool.start(export_id, batch, spare)
                case KillExport(export_id):
                    if not run.pool.kill(export_id):
                        log.error("cannot kill the exporter of export %d (same process or "
                                  "another host): its send_batch runs on, and its result will "
                                  "be ignored", export_id)
                case Drain(messages):
                    result = self._drain(config, messages)
                case Spill(messages, why):
                    self._spill(run, messages, why)
                case Stopped():
                    if not run.exiting:
                        self.send(self.myAddress, ActorExitRequest())
                case Log(level, text):
                    log.log(level, "Pachka %s: %s", config.name or self.myAddress, text)
            if result is not None:
                effects.extend(self._step(run, result))

    @staticmethod
    def _step(run: _Running, event: Event) -> list[Effect]:
        """One core step, counted by the metrics."""
        effects = run.core.handle(event)
        run.metrics.record(event, effects, time.monotonic())
        if isinstance(event, ExportFinished) and event.failure is not None:
            run.failure_detail = event.detail
        elif any(isinstance(effect, KillExport) for effect in effects):
            run.failure_detail = None
        return effects

    def _log_failure(self, run: _Running, retry_num: int, failure: FailureReason,
                     delay: float) -> None:
        """Once per failed attempt, whatever the base: the server, the batch, the retry
        (counted from 1) and, for a sink that raised, its traceback."""
        detail, run.failure_detail = run.failure_detail, None
        log.warning("Pachka %s: export of %d messages failed (%s); retry %d in %.3g s%s",
                    run.config.name or self.myAddress, run.core.status().batch_length,
                    failure if isinstance(failure, str) else f"{type(failure).__name__}: "
                                                             f"{failure}",
                    retry_num, delay, f"\n{detail}" if detail else "")

    def _arm(self, run: _Running, fired: TimerFired, delay: float) -> None:
        if run.config.timers == "wakeup" or run.exiting:
            wakeup = run.timers.arm(fired, time.monotonic() + delay, time.monotonic())
            if wakeup is not None and not run.exiting:
                self.wakeupAfter(timedelta(seconds=wakeup))

    def _timers_due(self, run: _Running, sender: Caller) -> None:
        """A wakeup: fire every timer now due, in order, then wake up for the next one."""
        for fired in run.timers.due(time.monotonic()):
            self._handle(run, fired, sender)
        wakeup = run.timers.rearm(time.monotonic())
        if wakeup is not None:
            self.wakeupAfter(timedelta(seconds=wakeup))

    def _spill(self, run: _Running, messages: list[Any], why: str) -> None:
        """Never silent: spilled (WARNING, where and how many) or lost (ERROR, how many)."""
        name, path = run.config.name or self.myAddress, run.config.spill_path
        assert path is not None
        try:
            _spill.write(path, messages)
        except Exception as exc:
            log.error("Pachka %s: %d accepted messages lost: %s, and writing them to %s "
                      "failed: %r", name, len(messages), why, path, exc)
        else:
            log.warning("Pachka %s: %d accepted messages spilled to %s (%s); a server started "
                        "with that spill_path sends them first", name, len(messages), path, why)

    @staticmethod
    def _drain(config: PachkaConfig, messages: list[Any]) -> DrainFinished:
        assert isinstance(config.sink, DrainingSink)
        try:
            config.sink.drain_on_terminate(messages, config.max_batch_size, config.server_value)
        except Exception as exc:
            return DrainFinished(exc)
        return DrainFinished()

    def _exit(self, run: _Running, sender: Caller) -> None:
        """Thespian ends this actor when this returns: finish right here. Nothing more is
        received, so the events come from the exports run now and from the timers."""
        run.exiting = True
        self._handle(run, ExitRequested(), sender)
        while run.core.state is not State.STOPPED:
            due = run.timers.next_due()
            if run.pool.running_now():
                finished = run.pool.wait_now(
                    None if due is None else max(0.0, due - time.monotonic()))
                if finished is not None:
                    self._handle(run, finished, sender)
                    continue
            elif due is None:
                log.error("Pachka %s: exiting in state %s with nothing to wait for",
                          run.config.name or self.myAddress, run.core.state.value)
                break
            else:
                time.sleep(max(0.0, due - time.monotonic()))
            for fired in run.timers.due(time.monotonic()):
                self._handle(run, fired, sender)
        run.pool.close()
        for requester in run.stop_requesters:
            self._answer(requester, Stopped())
