"""The supervisor's state machine, pure: events in, effects out.

No Thespian, no clock, no I/O: the actor shell in `supervisor.py` turns messages
into the events below, passes the time, and performs the effects the machine
returns. The machine runs one job at a time (booting, a restart, a call, the
shutdown), one step at a time: a child is started only once the one before it
counts as started, and stopped only once the one after it has exited, as in
Elixir. What arrives meanwhile waits in a queue, as in a gen_server's mailbox.

Children are told apart by `(id, incarnation)`: Thespian's `ChildActorExited`
can come twice and addresses get reused, so an event for an incarnation that is
no longer current is stale and ignored.

Its vocabulary lives elsewhere: `ChildSpec` in `config`, requests and replies in
`messages`, errors in `errors`.
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from ._restart import Restart, RestartIntensity, Sibling, Strategy, plan_restart, restarts
from .config import BRUTAL_KILL, ChildSpec, ChildType
from .errors import AlreadyPresent, ChildNotFound, ChildRunning, StartChildError, SupervisorError
from .messages import (
    ChildDeleted,
    ChildStarted,
    ChildTerminated,
    CountChildren,
    DeleteChild,
    RestartChild,
    StartChild,
    StopSupervisor,
    SupervisorRequest,
    SupervisorStarted,
    SupervisorStopped,
    TerminateChild,
    WhichChildren,
)

#: Why a child that exited before answering its init message failed to start.
EXITED_DURING_START = "exited before answering its init message"


# ---- events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Boot:
    specs: Sequence[ChildSpec]
    requester: Any


@dataclass(frozen=True)
class Call:
    request: SupervisorRequest
    requester: Any


@dataclass(frozen=True)
class ChildCreated:
    id: Hashable
    incarnation: int
    address: Any
    process: Any  # what KillChild needs, or None where the shell cannot kill


@dataclass(frozen=True)
class ChildInitialized:
    id: Hashable
    incarnation: int


@dataclass(frozen=True)
class ChildInitFailed:
    id: Hashable
    incarnation: int
    reason: Any


@dataclass(frozen=True)
class ChildExited:
    id: Hashable
    incarnation: int


@dataclass(frozen=True)
class ExitAnnounced:
    """The child sent `NormalExit`."""

    id: Hashable
    incarnation: int
    reason: str


@dataclass(frozen=True)
class KillTimeout:
    token: int


@dataclass(frozen=True)
class ExitRequested:
    """A bare `ActorExitRequest`: stop the children and exit, with no requester to answer."""


Event = (Boot | Call | ChildCreated | ChildInitialized | ChildInitFailed | ChildExited
         | ExitAnnounced | KillTimeout | ExitRequested)


# ---- effects -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateChild:
    """Create the actor; send the init message if the spec has one, else report it initialized."""

    spec: ChildSpec
    incarnation: int


@dataclass(frozen=True)
class StopChild:
    """Ask the child to stop: send `message`, or `ActorExitRequest` when it is None."""

    address: Any
    message: Any


@dataclass(frozen=True)
class KillChild:
    address: Any
    process: Any


@dataclass(frozen=True)
class ArmKillTimer:
    """Fire `KillTimeout(token)` after `seconds`: the child in `process` is to be killed then."""

    token: int
    seconds: float
    process: Any


@dataclass(frozen=True)
class Reply:
    to: Any
    value: Any


@dataclass(frozen=True)
class Exit:
    """Every child has stopped: the supervisor exits. `gave_up`: restarts exceeded the intensity."""

    gave_up: bool


@dataclass(frozen=True)
class Log:
    level: int
    text: str


Effect = CreateChild | StopChild | KillChild | ArmKillTimer | Reply | Exit | Log


# ---- the machine -------------------------------------------------------------------------


class Status(enum.Enum):
    STOPPED = "stopped"  # not running: not started yet, exited, or terminated
    STARTING = "starting"  # created; its init reply is awaited
    RUNNING = "running"
    STOPPING = "stopping"  # asked to stop; a kill timer runs unless shutdown is infinity
    KILLED = "killed"  # killed; its exit is awaited


@dataclass(eq=False)
class Child:
    spec: ChildSpec
    status: Status = Status.STOPPED
    incarnation: int = 0  # 0: never started
    address: Any = None
    process: Any = None
    normal_exit: bool = False  # this incarnation announced NormalExit
    kill_token: int | None = None

    @property
    def id(self) -> Hashable:
        return self.spec.id

    @property
    def alive(self) -> bool:
        return self.status is not Status.STOPPED


@dataclass(frozen=True)
class _Start:
    id: Hashable


@dataclass(frozen=True)
class _Stop:
    id: Hashable


@dataclass(frozen=True)
class _Delete:
    id: Hashable


@dataclass(frozen=True)
class _Decide:
    """A child exited by itself: restart it or not, once no job runs (Erlang's EXIT message)."""

    id: Hashable
    incarnation: int


@dataclass(frozen=True)
class _Retry:
    """Restarting the child failed to start it: try again, counting against the intensity."""

    id: Hashable


def _no_failure(child: Child, reason: Any) -> None:
    raise AssertionError(f"a job without start steps failed to start {child.id!r}")


@dataclass(eq=False)
class _Job:
    steps: deque[_Start | _Stop | _Delete]
    done: Callable[[], None]
    failed: Callable[[Child, Any], None] = _no_failure  # a start step failed; the job ends
    requester: Any = None  # answered with an error if the job is abandoned
    waiting: Child | None = None  # the child the current step waits for
    failure: Any = None  # why `waiting` failed to start; set while it is being stopped


class SupervisorCore:
    """One supervisor's children and jobs. Feed it events with `handle`; perform what it returns."""

    def __init__(self, strategy: Strategy, intensity: RestartIntensity) -> None:
        self.strategy = strategy
        self.intensity = intensity
        self.children: list[Child] = []
        self.exiting = False  # the shutdown job runs: no more calls or restarts
        self.exited = False
        self._job: _Job | None = None
        self._queue: deque[Call | _Decide | _Retry] = deque()
        self._stop_requesters: list[Any] = []
        self._bare = False  # exiting on a bare ActorExitRequest
        self._tokens = itertools.count(1)
        self._incarnations = itertools.count(1)  # unique within the supervisor, not per id
        self._effects: list[Effect] = []

    # ---- queries for the shell

    def find(self, id: Hashable) -> Child | None:
        return next((child for child in self.children if child.id == id), None)

    def child_at(self, address: Any) -> Child | None:
        """The live child at `address` (addresses of exited children may be reused)."""
        return next((c for c in self.children if c.alive and c.address == address), None)

    # ---- events

    def handle(self, event: Event, now: float) -> list[Effect]:
        """Apply one event at monotonic time `now`; the effects to perform, in order."""
        self._effects = []
        match event:
            case Boot(specs, requester):
                self.children = [Child(spec) for spec in specs]
                self._job = _Job(deque(_Start(spec.id) for spec in specs),
                                 done=lambda: self._reply(requester, SupervisorStarted()),
                                 failed=lambda child, reason: self._boot_failed(
                                     requester, child, reason),
                                 requester=requester)
            case Call():
                if self.exiting:
                    self._refuse(event)
                else:
                    self._queue.append(event)
            case ChildCreated(id, incarnation, address, process):
                if child := self._current(id, incarnation):
                    child.address, child.process = address, process
            case ChildInitialized(id, incarnation):
                child = self._current(id, incarnation)
                if child and child.status is Status.STARTING:
                    child.status = Status.RUNNING
                    if self._job is not None and self._job.waiting is child:
                        self._job.waiting = None
            case ChildInitFailed(id, incarnation, reason):
                child = self._current(id, incarnation)
                if child and self._job and self._job.waiting is child \
                        and child.status is Status.STARTING:
                    self._job.failure = reason
                    self._stop(child, None)  # the child may live on: make sure it is gone
            case ChildExited(id, incarnation):
                if child := self._current(id, incarnation):
                    self._exited(child)
            case ExitAnnounced(id, incarnation, reason):
                # While shutting down, the child is stopped in its turn, not now.
                child = self._current(id, incarnation)
                if child and child.status is Status.RUNNING and not self.exiting:
                    self._log(logging.INFO, f"child {id!r} exits normally ({reason})")
                    child.normal_exit = True
                    self._stop(child, None)
            case KillTimeout(token):
                child = next((c for c in self.children if c.kill_token == token), None)
                if child and child.status is Status.STOPPING:
                    self._log(logging.WARNING, f"child {child.id!r} did not stop within "
                                               f"{child.spec.shutdown} s: killed")
                    self._kill(child)
            case ExitRequested():
                self._exit_requested()
        self._advance(now)
        return self._effects

    def _current(self, id: Hashable, incarnation: int) -> Child | None:
        child = self.find(id)
        if child is None or child.incarnation != incarnation or not child.alive:
            return None
        return child

    def _exited(self, child: Child) -> None:
        was = child.status
        child.status, child.address, child.process = Status.STOPPED, None, None
        child.kill_token = None
        job = self._job
        if job is not None and job.waiting is child:
            job.waiting = None
            failure = EXITED_DURING_START if was is Status.STARTING else job.failure
            if failure is not None:
                job.failure = None
                self._job = None
                job.failed(child, failure)
        elif not self.exiting:
            self._queue.append(_Decide(child.id, child.incarnation))

    # ---- running jobs

    def _advance(self, now: float) -> None:
        """Run steps and queued items until something has to be waited for."""
        while not self.exited:
            job = self._job
            if job is None:
                if not self._queue:
                    return
                self._dispatch(self._queue.popleft(), now)
            elif job.waiting is not None:
                return
            elif job.steps:
                self._run_step(job, job.steps.popleft())
            else:
                self._job = None
                job.done()

    def _run_step(self, job: _Job, step: _Start | _Stop | _Delete) -> None:
        child = self.find(step.id)
        if child is None:
            return
        match step:
            case _Start() if not child.alive:
                child.incarnation = next(self._incarnations)
                child.status, child.normal_exit = Status.STARTING, False
                self._effects.append(CreateChild(child.spec, child.incarnation))
                job.waiting = child
            case _Stop() if child.alive:
                if child.status in (Status.STARTING, Status.RUNNING):
                    self._stop(child, child.spec.stop_message)
                job.waiting = child
            case _Delete():
                self.children.remove(child)

    def _stop(self, child: Child, message: Any) -> None:
        """Ask the child to stop (`message`, None: ActorExitRequest), or kill it if brutal."""
        shutdown = child.spec.shutdown
        if shutdown == BRUTAL_KILL:
            self._kill(child)
            return
        child.status = Status.STOPPING
        self._effects.append(StopChild(child.address, message))
        self._arm_kill_timer(child)

    def _arm_kill_timer(self, child: Child) -> None:
        if isinstance(shutdown := child.spec.shutdown, float):  # not infinity
            child.kill_token = next(self._tokens)
            self._effects.append(ArmKillTimer(child.kill_token, shutdown, child.process))

    def _kill(self, child: Child) -> None:
        child.status, child.kill_token = Status.KILLED, None
        self._effects.append(KillChild(child.address, child.process))

    def _dispatch(self, item: Call | _Decide | _Retry, now: float) -> None:
        match item:
            case Call(request, requester):
                self._call(request, requester)
            case _Decide(id, incarnation):
                child = self.find(id)
                if child and child.incarnation == incarnation and not child.alive:
                    self._decide(child, now)
            case _Retry(id):
                child = self.find(id)
                if child and not child.alive:
                    self._restart(child, now)

    def _decide(self, child: Child, now: float) -> None:
        abnormal = not child.normal_exit
        if restarts(child.spec.restart, abnormal):
            self._log(logging.ERROR if abnormal else logging.INFO,
                      f"child {child.id!r} exited {'abnormally' if abnormal else 'normally'}; "
                      f"restarting ({self.strategy})")
            self._restart(child, now)
            return
        self._log(logging.INFO, f"{child.spec.restart} child {child.id!r} exited "
                                f"{'abnormally' if abnormal else 'normally'}; not restarted")
        if child.spec.restart is Restart.TEMPORARY:
            self.children.remove(child)

    def _restart(self, child: Child, now: float) -> None:
        self.intensity = self.intensity.add(now)
        if self.intensity.exceeded:
            self._log(logging.ERROR, f"more than {self.intensity.max_restarts} restarts in "
                                     f"{self.intensity.max_seconds} s: shutting down")
            self._shut_down(gave_up=True)
            return
        siblings = [Sibling(c.id, c.spec.restart, c.alive) for c in self.children]
        plan = plan_restart(self.strategy, siblings, child.id)
        steps: deque[_Start | _Stop | _Delete] = deque(_Stop(i) for i in plan.stop)
        steps += (_Delete(i) for i in plan.delete)
        steps += (_Start(i) for i in plan.start)
        self._job = _Job(steps, done=lambda: None, failed=self._restart_failed)

    def _restart_failed(self, child: Child, reason: Any) -> None:
        self._log(logging.ERROR, f"restarting child {child.id!r} failed: {reason}; "
                                 f"trying again")
        self._queue.append(_Retry(child.id))

    def _boot_failed(self, requester: Any, child: Child, reason: Any) -> None:
        error = StartChildError(child.id, reason)
        self._log(logging.ERROR, str(error))
        self._shut_down(gave_up=False, last_reply=Reply(requester, error))

    # ---- calls

    def _call(self, request: SupervisorRequest, requester: Any) -> None:
        match request:
            case StartChild(spec):
                self._start_child(spec, requester)
            case WhichChildren():
                self._reply(requester, [(c.id, c.address, c.spec.type) for c in self.children])
            case CountChildren():
                self._reply(requester, self.counts())
            case StopSupervisor():
                self._stop_requesters.append(requester)
                self._shut_down(gave_up=False)
            case TerminateChild() | RestartChild() | DeleteChild():
                self._call_on_child(request, requester)

    def _start_child(self, spec: ChildSpec, requester: Any) -> None:
        if existing := self.find(spec.id):
            self._reply(requester, AlreadyPresent(spec.id, existing.alive))
            return
        child = Child(spec)
        self.children.append(child)

        def failed(child: Child, reason: Any) -> None:
            self.children.remove(child)  # Erlang forgets a spec whose child did not start
            self._reply(requester, StartChildError(child.id, reason))

        self._job = _Job(deque([_Start(spec.id)]), requester=requester, failed=failed,
                         done=lambda: self._reply(requester, ChildStarted(spec.id, child.address)))

    def _call_on_child(self, request: TerminateChild | RestartChild | DeleteChild,
                       requester: Any) -> None:
        child = self.find(request.id)
        if child is None:
            self._reply(requester, ChildNotFound(request.id))
        elif isinstance(request, TerminateChild):
            steps: deque[_Start | _Stop | _Delete] = deque([_Stop(child.id)])
            if child.spec.restart is Restart.TEMPORARY:
                steps.append(_Delete(child.id))
            self._job = _Job(steps, requester=requester,
                             done=lambda: self._reply(requester, ChildTerminated(child.id)))
        elif child.alive:
            self._reply(requester, ChildRunning(child.id))
        elif isinstance(request, RestartChild):
            self._job = _Job(deque([_Start(child.id)]), requester=requester,
                             done=lambda: self._reply(requester,
                                                      ChildStarted(child.id, child.address)),
                             failed=lambda c, reason: self._reply(
                                 requester, StartChildError(c.id, reason)))
        else:
            self.children.remove(child)
            self._reply(requester, ChildDeleted(child.id))

    def counts(self) -> dict[str, int]:
        """Elixir's `count_children`: specs, active (alive) children, supervisors, workers."""
        types = [c.spec.type for c in self.children]
        return {"specs": len(self.children),
                "active": sum(c.alive for c in self.children),
                "supervisors": types.count(ChildType.SUPERVISOR),
                "workers": types.count(ChildType.WORKER)}

    # ---- shutting down

    def _shut_down(self, gave_up: bool, last_reply: Reply | None = None) -> None:
        """Stop every child, the one being stopped first, then the others in reverse order."""
        self.exiting = True
        for item in self._queue:
            if isinstance(item, Call):
                self._refuse(item)
        self._queue.clear()
        stopping = [c for c in self.children if c.status in (Status.STOPPING, Status.KILLED)]
        others = [c for c in reversed(self.children) if c not in stopping]
        self._job = _Job(deque(_Stop(c.id) for c in stopping + others),
                         done=lambda: self._finish(gave_up, last_reply))

    def _refuse(self, call: Call) -> None:
        if isinstance(call.request, StopSupervisor):
            if self.exited:
                self._reply(call.requester, SupervisorStopped())
            else:
                self._stop_requesters.append(call.requester)
        else:
            self._reply(call.requester, SupervisorError("the supervisor is stopping"))

    def _finish(self, gave_up: bool, last_reply: Reply | None) -> None:
        for requester in self._stop_requesters:
            self._reply(requester, SupervisorStopped())
        if last_reply is not None:
            self._effects.append(last_reply)
        self.exited = True
        self._effects.append(Exit(gave_up))

    def _exit_requested(self) -> None:
        """Thespian drops wakeups from now on: kill timers are armed again for the shell."""
        if self._bare or self.exited:
            return
        self._bare = True
        job = self._job
        if not self.exiting:
            if job is not None and job.requester is not None:
                self._reply(job.requester, SupervisorError("the supervisor is exiting"))
            self._shut_down(gave_up=False)
        for child in self.children:
            if child.status is Status.STOPPING:
                self._arm_kill_timer(child)

    def _reply(self, to: Any, value: Any) -> None:
        self._effects.append(Reply(to, value))

    def _log(self, level: int, text: str) -> None:
        self._effects.append(Log(level, text))
