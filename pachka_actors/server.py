"""The actor shells: `PachkaServer` runs a `PachkaCore`, `Exporter` runs one batch.

The shells only translate: Thespian messages become core events, core effects
become sends, wakeups, exporter actors and kills. All decisions are the core's.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import deque
from collections.abc import Callable
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

from ._ask import Caller
from ._exporters import ExportBatch, Exporter, ExporterStarted, run_export
from ._process import ProcessId
from ._thespian import child_process
from .config import PachkaConfig
from .core import (
    ArmRetryTimer,
    ArmTimer,
    CreditRequested,
    Drain,
    DrainFinished,
    Effect,
    Event,
    ExportFinished,
    KillExport,
    Log,
    MessagesReceived,
    PachkaCore,
    StartExport,
    StopRequested,
)
from .errors import AlreadyStarted, NotStarted
from .messages import (
    Accepted,
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
from .sink import EXITED, KILLED, DrainingSink, FailureReason, Sink

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
class _ExporterInfo:
    address: ActorAddress
    process: ProcessId | None = None
    abandoned: bool = False


@dataclass
class _Running:
    config: PachkaConfig
    core: PachkaCore
    exporters: dict[int, _ExporterInfo] = field(default_factory=dict)
    spares: deque[ActorAddress] = field(default_factory=deque)
    timers: list[tuple[float, int, TimerFired]] = field(default_factory=list)  # a heap
    wakeup_due: float | None = None
    stop_requesters: list[Caller] = field(default_factory=list)


class PachkaServer(Actor):  # type: ignore[misc]
    """One Pachka server. Start it with `Pachka.start` or send it `StartServer(config)`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._run: _Running | None = None

    def receiveMessage(self, message: Any, address: ActorAddress) -> None:
        message, sender = Caller.of(message, address)
        run = self._run
        if run is None:
            self._unstarted(message, sender)
        elif isinstance(message, SendMessage):
            self._perform(run, run.core.handle(MessagesReceived((message.message,))), sender)
        elif isinstance(message, SendMessages):
            event = MessagesReceived(message.messages, message.credit)
            self._perform(run, run.core.handle(event), sender)
        elif isinstance(message, RequestCredit):
            self._perform(run, run.core.handle(CreditRequested(message.count)), sender)
        elif isinstance(message, ExportFinished):
            self._export_finished(run, message)
        elif isinstance(message, ExporterStarted):
            self._exporter_started(run, message)
        elif isinstance(message, WakeupMessage):
            self._timers_due(run, sender)
        elif isinstance(message, TimerFired):
            self._handle(run, message, sender)
        elif isinstance(message, Stop):
            run.stop_requesters.append(sender)
            self._handle(run, StopRequested(), sender)
        elif isinstance(message, GetStatus):
            self._answer(sender, run.core.status())
        elif isinstance(message, ChildActorExited):
            self._child_exited(run, message.childAddress)
        elif isinstance(message, ActorExitRequest):
            self._exit(run)
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
            config = message.config
            core = PachkaCore(
                max_batch_size=config.max_batch_size,
                critical_queue_size=config.critical_queue_size,
                max_batch_delay=config.max_batch_delay,
                export_timeout=config.export_timeout,
                credit_timeout=config.credit_timeout,
                drains=isinstance(config.sink, DrainingSink),
            )
            self._run = _Running(config, core, spares=deque([self.createActor(Exporter)]))
            self._answer(sender, Started(self.myAddress))
        elif not isinstance(message, ActorExitRequest | ChildActorExited | WakeupMessage):
            self._answer(sender, NotStarted(f"{self.myAddress} is not a started Pachka server"))

    def _handle(self, run: _Running, event: Event, sender: Caller) -> None:
        self._perform(run, run.core.handle(event), sender)

    def _perform(self, run: _Running, effects: list[Effect], sender: Caller) -> None:
        config = run.config
        for effect in effects:
            match effect:
                case Accepted() | Granted():
                    self._answer(sender, effect)
                case ArmTimer(kind, token, delay):
                    self._arm(run, TimerFired(kind, token), delay)
                case ArmRetryTimer(token, retry_num, failure):
                    delay = retry_delay(config.sink, retry_num, failure, config.server_value)
                    self._arm(run, TimerFired(TimerKind.RETRY, token), delay)
                case StartExport(export_id, batch):
                    address = run.spares.popleft() if run.spares else self.createActor(Exporter)
                    # Known at once where Thespian forked it here; else from ExporterStarted.
                    run.exporters[export_id] = _ExporterInfo(address, child_process(self, address))
                    self.send(address, ExportBatch(export_id, batch, config.sink,
                                                   config.server_value))
                    # Creating an exporter costs ~8 ms on multiprocTCPBase: make the next
                    # one now, while this one exports, rather than when it is needed.
                    if not run.core.terminating or run.core.queue:
                        run.spares.append(self.createActor(Exporter))
                case KillExport(export_id):
                    self._kill_exporter(run.exporters[export_id])
                case Drain(messages):
                    self._handle(run, self._drain(config, messages), sender)
                case Stopped():
                    self.send(self.myAddress, ActorExitRequest())
                case Log(level, text):
                    log.log(level, "Pachka %s: %s", config.name or self.myAddress, text)

    def _arm(self, run: _Running, fired: TimerFired, delay: float) -> None:
        """Keep timers here and at most one Thespian wakeup pending: wakeups cannot be
        cancelled, and simpleSystemBase checks every pending one before each message."""
        if run.config.timers != "wakeup":
            return
        due = time.monotonic() + delay
        heapq.heappush(run.timers, (due, fired.token, fired))
        if run.wakeup_due is None or due < run.wakeup_due:
            run.wakeup_due = due
            self.wakeupAfter(timedelta(seconds=delay))

    def _timers_due(self, run: _Running, sender: Caller) -> None:
        """A wakeup: fire every timer now due, in order, then wake up for the next one."""
        run.wakeup_due = None
        while run.timers and run.timers[0][0] <= time.monotonic():
            self._handle(run, heapq.heappop(run.timers)[2], sender)
        if run.timers and run.wakeup_due is None:
            run.wakeup_due = run.timers[0][0]
            self.wakeupAfter(timedelta(seconds=max(0.0, run.wakeup_due - time.monotonic())))

    @staticmethod
    def _drain(config: PachkaConfig, messages: list[Any]) -> DrainFinished:
        assert isinstance(config.sink, DrainingSink)
        try:
            config.sink.drain_on_terminate(messages, config.max_batch_size, config.server_value)
        except Exception as exc:
            return DrainFinished(exc)
        return DrainFinished()

    def _kill_exporter(self, info: _ExporterInfo) -> None:
        """SIGKILL where possible; before the exporter reports its pid, kill on the report."""
        info.abandoned = True
        if info.process is not None and not self._end(info.address, info.process):
            log.error("cannot kill the exporter at %s (same process or another host): its "
                      "send_batch runs on, and its result will be ignored", info.address)

    def _end(self, address: ActorAddress, process: ProcessId | None) -> bool:
        """SIGKILL an exporter where possible, else ask it to exit; True when killed.

        Nothing is sent to a killed one: a send to a dead actor stalls.
        """
        if process is not None and process.killable():
            process.kill()
            return True
        self.send(address, ActorExitRequest())
        return False

    def _exporter_started(self, run: _Running, started: ExporterStarted) -> None:
        info = run.exporters.get(started.export_id)
        if info is None:
            return
        info.process = started.process
        if info.abandoned:
            self._kill_exporter(info)

    def _export_finished(self, run: _Running, finished: ExportFinished) -> None:
        info = run.exporters.get(finished.export_id)
        if info is not None:
            self.send(info.address, ActorExitRequest())
        self._handle(run, finished, Caller(self.myAddress))

    def _child_exited(self, run: _Running, address: ActorAddress) -> None:
        """An exporter ended. Before its result arrived, it died: the batch is retried."""
        if address in run.spares:
            run.spares.remove(address)
            return
        for export_id, info in list(run.exporters.items()):
            if info.address == address:
                del run.exporters[export_id]
                if export_id == run.core.export_id and not info.abandoned:
                    self._handle(run, ExportFinished(export_id, EXITED), Caller(self.myAddress))
                return

    def _exit(self, run: _Running) -> None:
        """Thespian ends this actor when this returns: finish the shutdown right here."""
        if run.core.state is not State.STOPPED:
            drain_synchronously(run, self._kill_exporter)
        # Every exporter is idle now (a running one was killed above). Thespian's exit
        # broadcast can miss one created just before it, which then outlives this actor
        # as an orphan: kill them where possible, else ask them to exit.
        idle = [(info.address, info.process) for info in run.exporters.values()
                if not info.abandoned]
        idle += [(address, child_process(self, address)) for address in run.spares]
        for address, process in idle:
            self._end(address, process)
        for requester in run.stop_requesters:
            self._answer(requester, Stopped())


def drain_synchronously(run: _Running, kill: Callable[[_ExporterInfo], None]) -> None:
    """Stop without receiving another message (a bare `ActorExitRequest`).

    The in-flight exporter, if any, is killed and its batch exported again (at
    least once); batches are exported in this process, retries wait out their
    `retry_timeout` with `time.sleep`, except a backoff already under way or
    caused by that kill, which ends at once. No export timeout applies here.
    """
    core, config = run.core, run.config
    in_flight = core.export_id
    effects = core.handle(StopRequested())
    if in_flight is not None:
        kill(run.exporters[in_flight])
        effects += core.handle(ExportFinished(in_flight, KILLED))
    if core.state is State.RETRY_BACKOFF and core.timer is not None:
        # Waiting out a backoff that began before the exit request helps no one.
        effects = [e for e in effects if not isinstance(e, ArmRetryTimer)]
        effects += core.handle(core.timer)
    while effects:
        effect = effects.pop(0)
        match effect:
            case StartExport(export_id, batch):
                failure = run_export(config.sink, batch, config.server_value)
                effects += core.handle(ExportFinished(export_id, failure))
            case ArmRetryTimer(token, retry_num, failure):
                time.sleep(retry_delay(config.sink, retry_num, failure, config.server_value))
                effects += core.handle(TimerFired(TimerKind.RETRY, token))
            case Drain(messages):
                effects += core.handle(PachkaServer._drain(config, messages))
            case Log(level, text):
                log.log(level, "Pachka %s (terminating): %s", config.name, text)
