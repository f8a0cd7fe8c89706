"""Elixir's `Supervisor` for Thespian: ordered start, timed reverse shutdown, restarts.

`Supervisor.start(children, system=...)` starts a `SupervisorActor` and returns a
handle; actors inside the system can send it the same requests as messages
(`StartChild`, `TerminateChild`, `RestartChild`, `DeleteChild`, `WhichChildren`,
`CountChildren`, `StopSupervisor`) and get one reply each: the result, or an
exception instance. Decisions are made by the pure `SupervisorCore`; the actor
here only translates messages into its events and its effects into actions.

How Thespian shapes it (see docs/supervision.md):

- Normal exits. `ChildActorExited` has no reason, so a child that wants to exit
  normally sends `NormalExit()` to its supervisor, which then stops it. An exit
  the supervisor asked for is normal too; any other is abnormal.
- Killing. Thespian cannot kill an actor. On the multi-process bases each child
  is an OS child process of the supervisor, whose pid the supervisor records at
  creation; it is killed with SIGKILL, its descendants with it. Where no pid is
  known (simpleSystemBase, a child placed by the Admin), "kill" falls back to
  `ActorExitRequest`, which cannot end a handler that never returns.
- A bare `ActorExitRequest` (say, `ActorSystem.shutdown()`): Thespian ends an
  actor as soon as its handler returns, then sends `ActorExitRequest` to all its
  children at once and delivers nothing but `ChildActorExited` until they are
  gone. On the multi-process bases the supervisor keeps the reverse order
  anyway: it hides its children from that broadcast and stops them one by one,
  with kill timers on threads (wakeups are no longer delivered). Under
  simpleSystemBase nothing can be awaited after the handler: each child is sent
  its stop request, in reverse order, without waiting.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Hashable, Mapping, Sequence
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
from ._process_old import ProcessId
from ._restart import Restart, RestartIntensity, Strategy
from ._supervisor_core import SupervisorCore
from ._supervisor_events import (
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
)
from ._thespian import child_process, exit_children, forget_dead_children
from .config import ChildSpec, ChildType, SupervisorConfig, capabilities_satisfy
from .errors import ConfigError, SupervisorError
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




class SupervisorActor(Actor):  # type: ignore[misc]
    """The supervisor. Start it with `Supervisor.start`, or send it `StartSupervisor(config)`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._core: SupervisorCore | None = None
        self._parent: ActorAddress | None = None
        self._kill_timers: dict[ProcessId, threading.Timer] = {}

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
            return
        self._notice_unreported_exits()
        if isinstance(message, ChildActorExited):
            child = core.child_at(message.childAddress)
            # A child reports its exit just before its process ends; a stale report
            # for a reused address comes while the new child's process runs on.
            if child is not None and (child.process is None
                                      or child.process.wait_ended(1.0, os.getpid())):
                self._exited(child)
        elif isinstance(message, ActorExitRequest):
            self._bare_exit_request()
        elif isinstance(message, WakeupMessage):
            if isinstance(message.payload, KillTimeout):
                self._handle(message.payload)
        elif (child := core.child_at(sender)) is not None and child.status is Status.STARTING:
            if isinstance(message, PoisonMessage):
                self._handle(ChildInitFailed(child.id, child.incarnation, message.details))
            elif isinstance(message, Exception):
                self._handle(ChildInitFailed(child.id, child.incarnation, message))
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

    def _notice_unreported_exits(self) -> None:
        """Thespian, after handling one child's `ChildActorExited`, reaps every dead child,
        and never reports those others: look for such exits before each message."""
        assert self._core is not None
        for child in [c for c in self._core.children if c.alive and c.process is not None]:
            if child.process.ended(os.getpid()):
                self._exited(child)

    def _exited(self, child: Child) -> None:
        timer = self._kill_timers.pop(child.process, None)
        if timer is not None:
            timer.cancel()
        self._handle(ChildExited(child.id, child.incarnation, _placement_failure(child)))

    def _answer(self, caller: Caller, reply: Any) -> None:
        self.send(caller.address, caller.answer(reply))

    def _unstarted(self, message: Any, sender: Caller) -> None:
        if isinstance(message, StartSupervisor):
            config = message.config
            self._core = SupervisorCore(
                config.strategy, RestartIntensity(config.max_restarts, config.max_seconds))
            self._parent = sender.address if message.supervised else None
            self._handle(Boot(config.children, sender))
        elif not isinstance(message, ActorExitRequest | ChildActorExited | WakeupMessage
                            | PoisonMessage):
            self._answer(sender, SupervisorError(f"{self.myAddress} is not a started supervisor"))

    def _handle(self, event: Event) -> None:
        """Feed the core `event`, perform its effects, and feed it what they report."""
        assert self._core is not None
        events = [event]
        while events:
            for effect in self._core.handle(events.pop(0), time.monotonic()):
                events += self._perform(effect)

    def _perform(self, effect: Effect) -> list[Event]:
        match effect:
            case CreateChild(spec, incarnation):
                address = self.createActor(spec.actor_class,
                                           targetActorRequirements=spec.requirements)
                created = ChildCreated(spec.id, incarnation, address,
                                       child_process(self, address))
                if isinstance(spec.start, tuple):
                    self.send(address, spec.start[1])
                    return [created]
                return [created, ChildInitialized(spec.id, incarnation)]
            case StopChild(address, message):
                self.send(address, ActorExitRequest() if message is None else message)
                return self._unobservable_exit(address)
            case KillChild(address, process):
                return self._kill(address, process)
            case ArmKillTimer(token, seconds, process):
                assert self._core is not None
                if not self._core.exit_requested:  # else wakeups are no longer delivered
                    self.wakeupAfter(timedelta(seconds=seconds), payload=KillTimeout(token))
                elif process is not None:
                    timer = threading.Timer(seconds, process.kill_tree)
                    timer.daemon = True
                    timer.start()
                    self._kill_timers[process] = timer
            case Reply(to, value):
                self._answer(to, value)
            case Exit(gave_up):
                self._exit(gave_up)
            case Log(level, text):
                log.log(level, "supervisor %s: %s", self.myAddress, text)
        return []

    def _kill(self, address: ActorAddress, process: ProcessId | None) -> list[Event]:
        """SIGKILL the child and its descendants; its exit is reported here, once its process
        has ended (Thespian may reap it without a word, see `_notice_unreported_exits`)."""
        if process is None or not process.killable():
            log.warning("supervisor %s: cannot kill child %s (no process of it is known); "
                        "sent it ActorExitRequest instead", self.myAddress, address)
            self.send(address, ActorExitRequest())
            return self._unobservable_exit(address)
        process.kill_tree()
        assert self._core is not None
        child = self._core.child_at(address)
        if child is None or not process.wait_ended(1.0, os.getpid()):
            return []
        return [ChildExited(child.id, child.incarnation)]

    def _unobservable_exit(self, address: ActorAddress) -> list[Event]:
        """Under simpleSystemBase nothing arrives after a bare ActorExitRequest's handler:
        a child asked to stop then counts as stopped, so the next one is asked at once."""
        assert self._core is not None
        if not self._core.exit_requested or exit_children(self) is not None:
            return []
        child = self._core.child_at(address)
        return [] if child is None else [ChildExited(child.id, child.incarnation)]

    def _bare_exit_request(self) -> None:
        """A bare ActorExitRequest: stop the children in reverse order before Thespian ends us.

        Thespian, once this handler returns, would send ActorExitRequest to every
        child in its list at once and wait for them. The list is reduced to this
        actor's own address: Thespian's request then comes back here (and is
        ignored), and Thespian waits until `_exit` takes the address out, after
        the core has stopped the children one by one.
        """
        assert self._core is not None
        if self._core.exit_requested:  # Thespian's own request, coming back: see below
            return
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


def _placement_failure(child: Child) -> ConfigError | None:
    """A placed child that dies before it starts, with no process here: Thespian found no
    convention member to create it on (within ms), or it died there at once."""
    requirements = child.spec.requirements
    if child.status is not Status.STARTING or child.process is not None or not requirements:
        return None
    return ConfigError("requirements", f"no actor system in the convention has capabilities "
                                       f"matching {requirements!r} (or the child died there "
                                       f"before it started)")


class Supervisor:
    """A handle to a running supervisor; cheap to make.

    Each call is one Thespian `ask` and blocks until the supervisor answers, or
    `ask_timeout` seconds pass (`ActorTimeout`); None waits forever, as Elixir's
    supervisor calls do. Requests are served one at a time, after any restart or
    stop under way.
    """

    def __init__(self, system: ActorSystem, address: ActorAddress, *,
                 ask_timeout: float | None = None) -> None:
        self.system = system
        self.address = address
        self.ask_timeout = ask_timeout

    @classmethod
    def start(cls, children: Sequence[ChildSpec], *, system: ActorSystem,
              strategy: Strategy | str = Strategy.ONE_FOR_ONE, max_restarts: int = 3,
              max_seconds: float = 5.0, ask_timeout: float | None = None) -> Supervisor:
        """Start the children one after another, in order; return once all are started.

        Raises `ConfigError` before any actor starts, or `StartChildError` naming
        the child that failed, once the children already started are stopped
        again in reverse order.
        """
        config = SupervisorConfig.parse({"children": children, "strategy": strategy,
                                          "max_restarts": max_restarts,
                                          "max_seconds": max_seconds})
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
        config = SupervisorConfig.parse({"children": children, "strategy": strategy,
                                          "max_restarts": max_restarts,
                                          "max_seconds": max_seconds})
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
        failed restart of it is retried."""
        return self._ask(WhichChildren(), list)

    def count_children(self) -> dict[str, int]:
        """Counts of specs, active (running) children, supervisors and workers."""
        return self._ask(CountChildren(), dict)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the children in reverse order, each within its shutdown timeout, then exit.

        `timeout` (seconds, None: forever) bounds the wait, not the shutdown: on
        `ActorTimeout` the supervisor goes on stopping.
        """
        ask(self.system, self.address, StopSupervisor(), SupervisorStopped, timeout)

    def _ask(self, request: Any, reply_type: type[R]) -> R:
        return ask(self.system, self.address, request, reply_type, self.ask_timeout)

    def __repr__(self) -> str:
        return f"Supervisor({self.address})"
