"""The actor shell of a Pachka server: it runs a `PachkaCore` and only translates.

Thespian messages become core events; core effects become replies, timers (kept
in `Timers`, behind few Thespian wakeups), exports (through `ExporterPool`) and
calls of the sink's `drain_on_terminate`. All decisions are the core's; `_handle`
is the one effect loop. A bare `ActorExitRequest` is handed to `_exit`, which
runs the same loop until the core is done.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from thespian.actors import (
    Actor,
    ActorAddress,
    ActorExitRequest,
    ChildActorExited,
    PoisonMessage,
    ThespianWatch,
    WakeupMessage,
    WatchMessage,
)

from . import _exit, _spill
from ._ask import Caller
from ._base import Base
from ._exporters import ExporterPool, Outcome
from ._journal import Journal
from ._link import GetLink, Link, LinkName
from ._timers import Timers
from .config import PachkaConfig, capabilities_satisfy
from .core import (
    Answer,
    ArmRetryTimer,
    ArmTimer,
    CancelTimer,
    CreditRequested,
    Drain,
    DrainDone,
    Effect,
    Event,
    ExportDone,
    Finish,
    JournalFull,
    KillExport,
    Log,
    Lose,
    MessagesReceived,
    PachkaCore,
    Reply,
    Restored,
    Spill,
    StartExport,
    StopRequested,
    Timer,
    TimerFired,
)
from .errors import AlreadyStarted, ConfigError, NotStarted, plural
from .messages import (
    Accepted,
    CheckLoadable,
    FireTimer,
    GetStats,
    GetStatus,
    RequestCredit,
    SendMessage,
    SendMessages,
    Started,
    StartServer,
    Stop,
    Stopped,
)
from .metrics import Metrics
from .sink import DrainingSink, retry_delay, sizer

log = logging.getLogger(__name__)

#: Where Thespian cannot watch the exporters' files for the server (all bases but
#: multiprocTCPBase): seconds between looks while one starts or exports, from the first
#: (doubled while nothing comes) up to the last. A look costs ~10 us; a Thespian message
#: from the exporter instead would cost ~500 us.
POLL_FIRST, POLL_LAST = 0.0005, 0.02
_POLL = "pachka-poll"
_SYNC = "pachka-journal-sync"


@dataclass
class Running:
    config: PachkaConfig
    core: PachkaCore
    pool: ExporterPool
    metrics: Metrics
    timers: Timers = field(default_factory=Timers)
    stop_requesters: list[Caller] = field(default_factory=list)
    watching: bool = False  # Thespian watches the exporters' files: no looks by wakeup
    exiting: bool = False  # in the ActorExitRequest handler: nothing more is received
    look_due: float | None = None  # when the pending look at the exporters comes
    look_delay: float = POLL_FIRST  # the delay of the next one
    told: list[Link] = field(default_factory=list)  # handles told that the server exits
    #: The sink's `message_size`, when a byte limit is set: each message measured once, here.
    size: Callable[[Any], int] | None = None
    journal: Journal | None = None  # journal_path: what the core holds, on disk

    @property
    def name(self) -> str:
        return self.config.name or "server"


class PachkaServer(Actor):  # type: ignore[misc]
    """One Pachka server. Start it with `Pachka.start` or send it `StartServer(config)`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._run: Running | None = None

    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict[str, Any],
                                   requirements: dict[str, Any]) -> bool:
        """Placement (`requirements=`): only on an admin with every required capability.
        Its exporters have no check, so Thespian forks them beside it, where they can be killed."""
        return capabilities_satisfy(capabilities, requirements)

    def receiveMessage(self, message: Any, address: ActorAddress) -> ThespianWatch | None:
        message, sender = Caller.of(message, address)
        run = self._run
        if run is None:
            self._unstarted(message, sender)
        elif isinstance(message, ActorExitRequest):
            _exit.finish(self, run, sender)
        else:
            self.dispatch(run, message, sender)
            self.poll(run, sender)
            if run.watching:  # Thespian wakes us when an exporter writes, connects or dies
                return ThespianWatch(run.pool.fds() + _exit.fds_of(run))
        return None

    def dispatch(self, run: Running, message: Any, sender: Caller) -> None:
        if isinstance(message, SendMessage):
            messages: Sequence[Any] = (message.message,)
            self.handle(run, MessagesReceived(messages, None, _sizes(run, messages)), sender)
        elif isinstance(message, SendMessages):
            self.handle(run, MessagesReceived(message.messages, message.credit,
                                              _sizes(run, message.messages), message.ask,
                                              message.ask_size), sender)
        elif isinstance(message, RequestCredit):
            self.handle(run, CreditRequested(message.count, message.wait, sender,
                                             message.size), sender)
        elif isinstance(message, WakeupMessage):
            if message.payload == _POLL:
                if run.look_due is not None and time.monotonic() >= run.look_due:
                    run.look_due = None  # the look itself follows this dispatch
            elif message.payload == _SYNC:
                if run.journal is not None:
                    run.journal.timed_sync()
            else:
                self.fire_due(run, sender)
        elif isinstance(message, FireTimer):
            run.timers.cancel(message.timer)  # fired now, by hand: never again
            self.handle(run, TimerFired(message.timer), sender)
        elif isinstance(message, Stop):
            run.stop_requesters.append(sender)
            self.handle(run, StopRequested(), sender)
        elif isinstance(message, GetStatus):
            self._answer(sender, run.core.status())
        elif isinstance(message, CheckLoadable):
            self._answer(sender, Accepted(len(message.messages)))
        elif isinstance(message, GetLink):
            listener = run.pool.listener
            self._answer(sender, LinkName(None if listener is None else listener.name))
        elif isinstance(message, GetStats):
            self._answer(sender, run.metrics.stats())
        elif isinstance(message, StartServer):  # a name in use; or in use until this exits
            self._answer(sender, NotStarted(f"{self.myAddress} is stopping") if run.core.done
                         else AlreadyStarted(run.config.name or str(self.myAddress)))
        elif isinstance(message, PoisonMessage):
            log.error("a message could not be handled: %r", message.poisonMessage)
        elif not isinstance(message, ChildActorExited | WatchMessage):  # the look follows
            log.warning("Pachka server ignores unknown message %r", message)

    def _answer(self, caller: Caller, reply: Any) -> None:
        if caller.link is not None:
            caller.link.send(caller.answer(reply))
        else:
            self.send(caller.address, caller.answer(reply))

    def _unstarted(self, message: Any, sender: Caller) -> None:
        if isinstance(message, StartServer):
            try:
                self._run = self._start(message, sender)
            except ConfigError as exc:  # answered at once, naming the cause; nothing is left
                self._answer(sender, exc)
                self.send(self.myAddress, ActorExitRequest())
        elif not isinstance(message, ActorExitRequest | ChildActorExited | WakeupMessage):
            self._answer(sender, NotStarted(f"{self.myAddress} is not a started Pachka server"))

    def _start(self, message: StartServer, sender: Caller) -> Running:
        config = message.config
        if config is None:
            raise ConfigError("sink", f"the server's process cannot load the config "
                                      f"({message.unloadable}): define the sink and what it "
                                      f"holds at module level in an importable module (a class "
                                      f"defined in __main__ after ActorSystem() started is "
                                      f"not there)")
        try:
            spilled = _spill.take(config.spill_path) if config.spill_path else []
        except Exception as exc:
            raise ConfigError("spill_path", f"cannot read {config.spill_path}: {exc!r}") from exc
        prefix = f"{os.getpid():x}{os.urandom(4).hex()}-"
        journal = _open_journal(config, f"{prefix}0")  # "<prefix>0" is no core batch's id
        if journal is not None:  # what an earlier server held goes first
            spilled = list(journal.live.batches.values())
        base = Base.of(self)
        core = PachkaCore(
            max_batch_size=config.max_batch_size,
            critical_queue_size=config.critical_queue_size,
            max_batch_delay=config.max_batch_delay,
            export_timeout=config.export_timeout,
            credit_timeout=config.credit_timeout,
            shutdown_timeout=config.shutdown_timeout,
            drains=isinstance(config.sink, DrainingSink),
            spills=config.spill_path is not None or journal is not None,
            batch_prefix=prefix,
            max_batch_bytes=config.max_batch_bytes,
            critical_queue_bytes=config.critical_queue_bytes,
            notes=None if journal is None else [],
        )
        def gauges() -> tuple[int, int, int]:
            now = core.status()  # once per reading, not once per gauge
            return now.queue_length, now.batch_length, now.queue_bytes

        metrics = Metrics(config.name or str(self.myAddress), config.meter_provider, gauges,
                          capacity=config.critical_queue_size)
        pool = ExporterPool(self, base, config.sink, config.server_value,
                            config.batches_per_exporter)
        run = Running(config, core, pool, metrics, watching=base.watches_files,
                      size=sizer(config.sink, config.server_value) if core.measures else None,
                      journal=journal)
        _exit.prepare(base)
        pool.prepare()
        self._answer(sender, Started(self.myAddress))
        if spilled:
            log.warning("Pachka %s: sending %s an earlier server left in %s first",
                        run.name, plural(sum(map(len, spilled)), "message"),
                        config.journal_path or config.spill_path)
            size = run.size
            self.handle(run, Restored(spilled, None if size is None else
                                      [list(map(size, batch)) for batch in spilled]), sender)
        return run

    def handle(self, run: Running, event: Event, sender: Caller) -> None:
        """The one effect loop: perform the core's effects, in order, feeding back the
        events that performing some of them produces at once."""
        config = run.config
        effects: deque[Effect] = deque(self._step(run, event))
        while effects:
            results: list[Event] = []
            match effects.popleft():
                case Answer(reply):
                    self._answer(sender, reply)
                case Reply(to, reply):
                    self._answer(to, reply)
                case ArmTimer(timer, delay):
                    self._arm(run, timer, delay)
                case ArmRetryTimer(timer, retry_num, failure):
                    delay = retry_delay(config.sink, retry_num, failure, config.server_value)
                    # The traceback with a batch's first failure only: a sink down for an
                    # hour then logs one line per retry, not a page.
                    notes = "".join(f"\n{note}" for note in getattr(failure, "__notes__", ())
                                    if retry_num == 1)
                    log.warning("Pachka %s: export of %s failed (%s); retry %d in "
                                "%.3g s%s", run.name, plural(len(run.core.batch), "message"),
                                failure if isinstance(failure, str)
                                else f"{type(failure).__name__}: {failure}", retry_num, delay,
                                notes)
                    self._arm(run, timer, delay)
                case CancelTimer(timer):
                    run.timers.cancel(timer)
                case StartExport(export_id, batch, _):
                    spare = not run.core.terminating or bool(run.core.queue)
                    results = _done(run.pool.start(export_id, batch, spare))
                    run.look_delay = POLL_FIRST
                case KillExport(export_id):
                    if not run.pool.kill(export_id):
                        log.error("Pachka %s: cannot kill the exporter of export %d (it runs in "
                                  "this process): its send_batch runs on, and its result will "
                                  "be ignored", run.name, export_id)
                case Drain(messages):
                    results = [_drain(config, messages)]
                case Spill(batches, why) if run.journal is not None:
                    log.warning("Pachka %s: %s kept in the journal %s (%s); a "
                                "server started on it sends them first", run.name,
                                plural(sum(map(len, batches)), "accepted message"),
                                config.journal_path, why)
                case Spill(batches, why):
                    _spill.keep(run.name, config.spill_path, batches, why)
                case Lose(count, why):
                    log.error("Pachka %s: %s lost: %s", run.name,
                              plural(count, "accepted message"), why)
                case Finish():
                    self._finish(run)
                case Log(level, text):
                    log.log(level, "Pachka %s: %s", run.name, text)
            for result in results:
                effects.extend(self._step(run, result))

    def _step(self, run: Running, event: Event) -> list[Effect]:
        """One core step, counted by the metrics; with a journal, what it changed is written
        (and synced, as `journal_sync` says) before any of its effects: an acknowledgement,
        an export."""
        journal = run.journal
        effects = run.core.handle(event)
        if journal is not None:
            if notes := run.core.take_notes():
                delay = journal.record(notes)
                if delay is not None and not run.exiting:
                    self.wakeupAfter(timedelta(seconds=delay), payload=_SYNC)
            if (full := journal.full()) != run.core.journal_full:  # it grew, or compacted
                effects += run.core.handle(JournalFull(full))
        run.metrics.record(event, effects, time.monotonic())
        return effects

    def poll(self, run: Running, sender: Caller) -> None:
        """Take what the exporters sent, then look again soon while they owe something:
        at once after an export starts, less often the longer nothing comes."""
        for event in _done(run.pool.poll()):
            run.look_delay = POLL_FIRST
            self.handle(run, event, sender)
        _exit.listen(self, run)
        if run.exiting or run.watching or not run.pool.busy:
            run.look_delay = POLL_FIRST
            return
        due = time.monotonic() + run.look_delay
        if run.look_due is None or due < run.look_due:  # wakeups cannot be cancelled
            run.look_due = due
            self.wakeupAfter(timedelta(seconds=run.look_delay), payload=_POLL)
            run.look_delay = min(run.look_delay * 2, POLL_LAST)

    def _arm(self, run: Running, timer: Timer, delay: float) -> None:
        """Every timer is kept; manual ones get no wakeup (they still fire at a bare exit)."""
        now = time.monotonic()
        wakeup = run.timers.arm(timer, now + delay, now)
        if wakeup is not None and run.config.timers == "wakeup" and not run.exiting:
            self.wakeupAfter(timedelta(seconds=wakeup))

    def fire_due(self, run: Running, sender: Caller) -> None:
        """Fire every timer now due, in order, then wake up for the next one."""
        for timer in run.timers.due(time.monotonic()):
            self.handle(run, TimerFired(timer), sender)
        wakeup = run.timers.rearm(time.monotonic())
        if wakeup is not None and run.config.timers == "wakeup" and not run.exiting:
            self.wakeupAfter(timedelta(seconds=wakeup))

    def _finish(self, run: Running) -> None:
        """Everything accepted is delivered, drained, spilled or reported: answer every
        `Stop`, end the exporters (their teardown is not worth waiting for), and exit."""
        if run.journal is not None:  # left compacted before anyone hears of the stop
            run.journal.close()
        for requester in run.stop_requesters:
            self._answer(requester, Stopped(run.metrics.stats()))
        run.stop_requesters.clear()
        run.pool.close()
        if not run.exiting:
            self.send(self.myAddress, ActorExitRequest())


def _sizes(run: Running, messages: Sequence[Any]) -> list[int] | None:
    return None if run.size is None else list(map(run.size, messages))


def _open_journal(config: PachkaConfig, tail_id: str) -> Journal | None:
    if config.journal_path is None:
        return None
    try:
        return Journal.open(config.journal_path, config.journal_sync, config.journal_max_bytes,
                            tail_id)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError("journal_path", f"cannot open {config.journal_path} to read and "
                                          f"append (created if missing): {exc!r}") from exc


def _done(outcomes: list[Outcome]) -> list[Event]:
    return [ExportDone(o.export_id, o.failure, o.returned) for o in outcomes]


def _drain(config: PachkaConfig, messages: list[Any]) -> DrainDone:
    assert isinstance(config.sink, DrainingSink)
    try:
        config.sink.drain_on_terminate(messages, config.max_batch_size, config.server_value)
    except Exception as exc:
        return DrainDone(exc)
    return DrainDone()

