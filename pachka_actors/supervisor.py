"""Elixir's `Supervisor` for Thespian: ordered start, timed reverse shutdown, restarts.

`Supervisor.start(children, system=...)` starts a `SupervisorActor` and returns a
handle, also a context manager that stops it. Actors in the system send it the
same requests as messages and get one reply each. Decisions are the pure
`SupervisorCore`'s; the actor here turns messages into its events and performs
its effects. What Thespian imposes (more in docs/supervision.md):

- A child's exit is the end of its OS process, seen through a pidfd (`DeathWatch`).
  `ChildActorExited` only says when to look: it comes just before the process
  ends (the watch is looked at again on short wakeups), may come twice or for a
  reused address, and comes for one child only when several die together (each
  look takes every death). Where no process is known (simpleSystemBase, a child
  placed by the Admin) the report is the exit. Killing is SIGKILL to the process.
- A bare `ActorExitRequest` (`ActorSystem.shutdown()`): once its handler returns,
  Thespian stops all children at once and delivers only `ChildActorExited`. The
  supervisor hides its children from that and stops them in reverse order; with
  no wakeups, kill timers run on threads and an expected death is awaited on its
  pidfd in the handler (nothing else can arrive). simpleSystemBase runs nothing
  after the handler: each child is only sent its stop request, in reverse order.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from thespian.actors import (
    Actor,
    ActorAddress,
    ActorExitRequest,
    ActorSystem,
    ChildActorExited,
    PoisonMessage,
    WakeupMessage,
)

from ._ask import Caller, R, ask
from ._base import Base, child_pid, exit_children, forget_dead_children
from ._process import DeathWatch
from ._restart import Restart, RestartIntensity, Strategy
from ._supervisor_core import (
    ArmKillTimer,
    Boot,
    Call,
    Child,
    ChildCreated,
    ChildExited,
    ChildInitFailed,
    ChildInitialized,
    CreateChild,
    Effect,
    Event,
    Exit,
    ExitAnnounced,
    ExitRequested,
    KillChild,
    KillTimeout,
    Log,
    Reply,
    Status,
    StopChild,
    SupervisorCore,
)
from .config import ChildSpec, ChildType, SupervisorConfig, capabilities_satisfy
from .errors import ActorGone, SupervisorError
from .messages import (
    ChildDeleted,
    ChildStarted,
    ChildTerminated,
    CountChildren,
    DeleteChild,
    NormalExit,
    RestartChild,
    StartChild,
    StartSupervisor,
    StopSupervisor,
    SupervisorRequest,
    SupervisorStarted,
    SupervisorStopped,
    TerminateChild,
    WhichChildren,
)

log = logging.getLogger(__name__)

#: An awaited death not seen yet is looked for again after FIRST_LOOK, then at doubling
#: intervals up to LONGEST_LOOK, for PATIENCE seconds: a process ends within milliseconds
#: of its report or its kill, and a report whose child runs on was for an earlier child
#: at the same address.
FIRST_LOOK, LONGEST_LOOK, PATIENCE = 0.005, 0.5, 1.0


@dataclass(frozen=True)
class _Look:
    """A wakeup: look at the death watch again (`delay` after the last look)."""

    delay: float


class SupervisorActor(Actor):  # type: ignore[misc]
    """The supervisor. Start it with `Supervisor.start`, or send it `StartSupervisor(config)`."""

    _base: Base  # known once started

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._core: SupervisorCore | None = None
        self._parent: ActorAddress | None = None
        self._watch: DeathWatch[tuple[Hashable, int]] = DeathWatch()  # by (id, incarnation)
        self._awaited: dict[tuple[Hashable, int], float] = {}  # deaths to look for, until

    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict[str, Any],
                                   requirements: dict[str, Any]) -> bool:
        """Placement of a whole subtree (`requirements=`): its children start beside it."""
        return capabilities_satisfy(capabilities, requirements)

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        message, caller = Caller.of(message, sender)
        core = self._core
        if core is None:
            self._unstarted(message, caller)
        elif isinstance(message, ChildActorExited):
            self._reported(core.child_at(message.childAddress))
        elif isinstance(message, ActorExitRequest):
            if not core.exit_requested:  # else Thespian's own, come back (_bare_exit_request)
                self._bare_exit_request()
        elif isinstance(message, WakeupMessage):
            if isinstance(message.payload, KillTimeout):
                self._handle(message.payload)
            elif isinstance(message.payload, _Look):
                self._handle(*self._deaths())
                if self._awaited:
                    self._look_again(min(2 * message.payload.delay, LONGEST_LOOK))
        elif (child := core.child_at(sender)) is not None and child.status is Status.STARTING:
            if isinstance(message, PoisonMessage | Exception):
                reason = message.details if isinstance(message, PoisonMessage) else message
                self._handle(ChildInitFailed(child.id, child.incarnation, reason))
            else:
                self._handle(ChildInitialized(child.id, child.incarnation))
        elif isinstance(message, NormalExit) and child is not None:
            self._handle(ExitAnnounced(child.id, child.incarnation, message.reason))
        elif isinstance(message, SupervisorRequest):
            self._handle(Call(message, caller))
        elif isinstance(message, StartSupervisor):
            self._answer(caller, SupervisorError(f"{self.myAddress} is started already"))
        elif isinstance(message, PoisonMessage):
            log.warning("supervisor %s: a message could not be handled: %r", self.myAddress,
                        message.poisonMessage)
        else:
            log.debug("supervisor %s ignores %r", self.myAddress, message)

    def _unstarted(self, message: Any, sender: Caller) -> None:
        if isinstance(message, StartSupervisor):
            config, self._base = message.config, Base.of(self)
            self._core = SupervisorCore(
                config.strategy, RestartIntensity(config.max_restarts, config.max_seconds))
            self._parent = sender.address if message.supervised else None
            self._handle(Boot(config.children, sender))
        elif not isinstance(message, ActorExitRequest | ChildActorExited | WakeupMessage
                            | PoisonMessage):
            self._answer(sender, SupervisorError(f"{self.myAddress} is not a started supervisor"))

    def _answer(self, caller: Caller, reply: Any) -> None:
        self.send(caller.address, caller.answer(reply))

    def _handle(self, *events: Event) -> None:
        """Feed the core the events, perform its effects, and feed it what they report. At a
        bare exit also the deaths seen meanwhile: no wakeup will look for them, and one
        may go unreported (Thespian reaped it while it handled another child's report)."""
        assert self._core is not None
        pending = list(events)
        while pending:
            for effect in self._core.handle(pending.pop(0), time.monotonic()):
                pending += self._perform(effect)
            if not pending and self._core.exit_requested:
                pending = self._deaths()

    def _perform(self, effect: Effect) -> list[Event]:
        assert self._core is not None
        match effect:
            case CreateChild(spec, incarnation):
                address = self.createActor(spec.actor_class,
                                           targetActorRequirements=spec.requirements)
                if (pid := child_pid(self, address)) is not None:
                    self._watch.watch((spec.id, incarnation), pid)
                created = ChildCreated(spec.id, incarnation, address, pid is not None)
                if isinstance(spec.start, tuple):
                    self.send(address, spec.start[1])
                    return [created]
                return [created, ChildInitialized(spec.id, incarnation)]
            case StopChild(address, message):
                self.send(address, ActorExitRequest() if message is None else message)
                if self._core.exit_requested and self._base.inline:
                    # Nothing runs after this handler: the child counts as stopped, so that
                    # the next one is asked at once.
                    child = self._core.child_at(address)
                    return [] if child is None else [ChildExited(child.id, child.incarnation)]
            case KillChild(id, incarnation):
                if self._watch.kill((id, incarnation)):  # False: it has ended already
                    self._awaited[id, incarnation] = time.monotonic() + PATIENCE
                    self._look_again(FIRST_LOOK)
            case ArmKillTimer(id, incarnation, seconds):
                if not self._core.exit_requested:
                    self.wakeupAfter(timedelta(seconds=seconds),
                                     payload=KillTimeout(id, incarnation))
                elif (pid := self._watch.pid((id, incarnation))) is not None:
                    _kill_unless_ended(pid, seconds, id)
            case Reply(to, value):
                self._answer(to, value)
            case Exit(gave_up):
                self._exit(gave_up)
            case Log(level, text):
                log.log(level, "supervisor %s: %s", self.myAddress, text)
        return []

    def _reported(self, child: Child | None) -> None:
        """Thespian reported the exit of `child` (None: of no live child). Where its process
        is known only its end counts: look for it, and for any other death, now and shortly
        after; handling this report, Thespian reaps every dead child without a word."""
        if child is not None and not child.killable:
            self._handle(ChildExited(child.id, child.incarnation))
        elif child is not None:
            self._awaited.setdefault((child.id, child.incarnation), time.monotonic() + PATIENCE)
        self._handle(*self._deaths())
        self._look_again(FIRST_LOOK)

    def _look_again(self, delay: float) -> None:
        """Look at the watch after `delay`; not at a bare exit, which has no wakeups."""
        assert self._core is not None
        if not self._core.exit_requested:
            self.wakeupAfter(timedelta(seconds=delay), payload=_Look(delay))

    def _deaths(self) -> list[Event]:
        """The exits the watch has seen, as events; awaited deaths past their time are dropped.

        At a bare exit no wakeup comes to look again, and nothing but exits can
        arrive: the awaited deaths (of a child that reported its exit, or was
        killed, a matter of milliseconds) are waited for here, on their pidfds.
        """
        assert self._core is not None
        gone = self._watch.dead()
        deadline = time.monotonic() + PATIENCE
        while (self._core.exit_requested and (left := deadline - time.monotonic()) > 0
               and any(self._watch.pid(name) is not None for name in self._awaited)):
            gone += self._watch.dead(left)
        now = time.monotonic()
        self._awaited = {name: until for name, until in self._awaited.items()
                         if until > now and self._watch.pid(name) is not None}
        return [ChildExited(id, incarnation) for id, incarnation in gone]

    def _bare_exit_request(self) -> None:
        """Stop the children in reverse order before Thespian ends this actor.

        Thespian, once this handler returns, would send ActorExitRequest to every
        child in its list at once and wait for them. The list is reduced to this
        actor's own address: Thespian's request then comes back here (and is
        ignored), and Thespian waits until `_exit` takes the address out, after
        the core has stopped the children one by one.
        """
        assert self._core is not None
        self._handle(ExitRequested())
        thespian_children = exit_children(self)
        if not self._core.exited and thespian_children is not None:
            thespian_children[:] = [self.myAddress]
        else:
            forget_dead_children(self)

    def _exit(self, gave_up: bool) -> None:
        assert self._core is not None
        if self._core.exit_requested:
            thespian_children = exit_children(self)
            if thespian_children is not None and self.myAddress in thespian_children:
                thespian_children.remove(self.myAddress)  # Thespian ends this actor now
            forget_dead_children(self)
        elif gave_up and self._parent is not None:
            self.send(self._parent, NormalExit("shutdown"))  # the parent stops this actor
        else:
            self.send(self.myAddress, ActorExitRequest())


def _kill_unless_ended(pid: int, seconds: float, id: Hashable) -> None:
    """A kill timer on a thread, for a bare exit: it waits on a pidfd of its own for the
    child's end, so that it never kills a pid that has ended (and may be reused)."""
    watch: DeathWatch[int] = DeathWatch()
    watch.watch(pid, pid)

    def wait_or_kill() -> None:
        if not watch.dead(seconds) and watch.kill(pid):
            log.warning("child %r did not stop within %s s: killed", id, seconds)
        watch.close()

    threading.Thread(target=wait_or_kill, daemon=True).start()


def _config(children: Sequence[ChildSpec], strategy: Strategy | str, max_restarts: int,
            max_seconds: float) -> SupervisorConfig:
    return SupervisorConfig.parse({"children": children, "strategy": strategy,
                                   "max_restarts": max_restarts, "max_seconds": max_seconds})


class Supervisor:
    """A handle to a running supervisor; cheap to make. As a context manager it stops the
    supervisor when the block ends, also when the block raises (the error then propagates).

    Each call is one Thespian `ask` and blocks until the supervisor answers, or
    `ask_timeout` seconds pass (`ActorTimeout`, also when the supervisor is
    gone); None waits forever, as Elixir's supervisor calls do. Requests are
    served one at a time, after any restart or stop under way.
    """

    def __init__(self, system: ActorSystem, address: ActorAddress, *,
                 ask_timeout: float | None = None) -> None:
        self.system = system
        self.address = address
        self.ask_timeout = ask_timeout
        self._stopped = False

    @classmethod
    def start(cls, children: Sequence[ChildSpec], *, system: ActorSystem,
              strategy: Strategy | str = Strategy.ONE_FOR_ONE, max_restarts: int = 3,
              max_seconds: float = 5.0, ask_timeout: float | None = None) -> Supervisor:
        """Start the children one after another, in order; return once all are started.

        Raises `ConfigError` before any actor starts, or `StartChildError` naming
        the child that failed, once the children already started are stopped
        again in reverse order.
        """
        config = _config(children, strategy, max_restarts, max_seconds)
        handle = cls(system, system.createActor(SupervisorActor), ask_timeout=ask_timeout)
        handle._ask(StartSupervisor(config), SupervisorStarted)
        return handle

    @staticmethod
    def child_spec(*, id: Hashable, children: Sequence[ChildSpec],
                   strategy: Strategy | str = Strategy.ONE_FOR_ONE, max_restarts: int = 3,
                   max_seconds: float = 5.0, restart: Restart | str = Restart.PERMANENT,
                   shutdown: float | timedelta | str | None = None,
                   requirements: Mapping[str, Any] | None = None) -> ChildSpec:
        """The spec of a supervisor nested under another: it starts and stops its own children
        in order, inside its parent's order. With `requirements` the subtree runs on a
        convention member with those capabilities (docs/scale-out.md)."""
        config = _config(children, strategy, max_restarts, max_seconds)
        return ChildSpec(id, (SupervisorActor, StartSupervisor(config, supervised=True)),
                         restart=restart, shutdown=shutdown, type=ChildType.SUPERVISOR,
                         stop_message=StopSupervisor(), requirements=requirements)

    def start_child(self, spec: ChildSpec) -> ActorAddress:
        """Add `spec` as the last child and start it; its address."""
        return self._ask(StartChild(spec), ChildStarted).address

    def terminate_child(self, id: Hashable) -> None:
        """Stop the child as in a shutdown; its spec stays (a temporary child's goes).
        A child whose failed restart is being retried is no longer retried."""
        self._ask(TerminateChild(id), ChildTerminated)

    def restart_child(self, id: Hashable) -> ActorAddress:
        """Start again a child that is not running; its address. `ChildRestarting` if the
        supervisor retries it already."""
        return self._ask(RestartChild(id), ChildStarted).address

    def delete_child(self, id: Hashable) -> None:
        """Forget the spec of a child that is not running (nor `ChildRestarting`)."""
        self._ask(DeleteChild(id), ChildDeleted)

    def which_children(
            self) -> list[tuple[Hashable, ActorAddress | Literal["restarting"] | None, ChildType]]:
        """`(id, address, type)` of every child, in start order. The address is None when
        the child is not running, `RESTARTING` ("restarting", Elixir's `:restarting`) while a
        failed restart left it to a retry."""
        return self._ask(WhichChildren(), list)

    def count_children(self) -> dict[str, int]:
        """Counts of specs, active (running) children, supervisors and workers."""
        return self._ask(CountChildren(), dict)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the children in reverse order, each within its shutdown timeout, then exit.

        `timeout` (seconds, None: forever) bounds the wait, not the shutdown: on
        `ActorTimeout` the supervisor goes on stopping. Once the supervisor has
        stopped (or is found gone), `stop()` returns at once.
        """
        if not self._stopped:
            with contextlib.suppress(ActorGone):  # gone already: stopped some other way
                ask(self.system, self.address, StopSupervisor(), SupervisorStopped, timeout)
            self._stopped = True

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _ask(self, request: Any, reply_type: type[R]) -> R:
        return ask(self.system, self.address, request, reply_type, self.ask_timeout)

    def __repr__(self) -> str:
        return f"Supervisor({self.address})"
