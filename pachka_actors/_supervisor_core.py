"""The supervisor, pure: its vocabulary (events in, effects out, child records) and its engine.

No Thespian, no clock, no I/O: the actor shell in `supervisor.py` turns messages
into events, passes the time, and performs the effects the engine returns; the
model test (tests/test_supervisor_core.py) plays the actors instead. The engine
runs one job at a time (booting, a restart, a call, the shutdown), one step at a
time: a child is started only once the one before it counts as started, and
stopped only once the one after it has exited, as in Elixir. What arrives
meanwhile waits in a queue, as in a gen_server's mailbox. A job is plain data
(its kind, its steps, who asked); how it ends is decided by its kind in one
place (`_ended`, `_failed`). Every helper returns its effects.

Children are named by `(id, incarnation)`: Thespian's `ChildActorExited` can
come twice and addresses get reused, so an event for an incarnation that is no
longer current is stale and ignored. The restart policy is `_restart`'s.
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from ._restart import Restart, RestartIntensity, Sibling, Strategy, plan_restart, restarts
from .config import BRUTAL_KILL, ChildSpec, ChildType
from .errors import (
    AlreadyPresent,
    ChildNotFound,
    ChildRestarting,
    ChildRunning,
    ConfigError,
    StartChildError,
    SupervisorError,
)
from .messages import (
    RESTARTING,
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

# ---- events: what the shell saw ----------------------------------------------------------


@dataclass(frozen=True)
class Boot:
    """The supervisor's init message: start `specs` in order, then answer `requester`."""

    specs: Sequence[ChildSpec]
    requester: Any


@dataclass(frozen=True)
class Call:
    request: SupervisorRequest
    requester: Any


@dataclass(frozen=True)
class _Incarnation:
    """About one incarnation of a child, named by `(id, incarnation)`."""

    id: Hashable
    incarnation: int


@dataclass(frozen=True)
class ChildCreated(_Incarnation):
    address: Any
    killable: bool  # the shell knows its process; else "kill" asks it to stop


class ChildInitialized(_Incarnation):
    """The child answered its init message (or has none): it counts as started."""


@dataclass(frozen=True)
class ChildInitFailed(_Incarnation):
    reason: Any


class ChildExited(_Incarnation):
    """Its process has ended (or, where the shell knows none, Thespian reported its exit)."""


@dataclass(frozen=True)
class ExitAnnounced(_Incarnation):
    """The child sent `NormalExit`: its exit, which the supervisor then asks for, is normal."""

    reason: str


class KillTimeout(_Incarnation):
    """The child's shutdown time is up (the incarnation tells a stale timer)."""


@dataclass(frozen=True)
class ExitRequested:
    """A bare `ActorExitRequest`: stop the children and exit, with no requester to answer."""


Event = (Boot | Call | ChildCreated | ChildInitialized | ChildInitFailed | ChildExited
         | ExitAnnounced | KillTimeout | ExitRequested)

# ---- effects: what the shell does --------------------------------------------------------


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


class KillChild(_Incarnation):
    """SIGKILL the child's process and its descendants (never asked of one not killable)."""


@dataclass(frozen=True)
class ArmKillTimer(_Incarnation):
    """Report `KillTimeout(id, incarnation)` after `seconds`, unless the child exited by then."""

    seconds: float


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

# ---- children ----------------------------------------------------------------------------


class Status(enum.Enum):
    STOPPED = "stopped"  # not running: not started yet, exited, or terminated
    STARTING = "starting"  # created; its init reply is awaited
    RUNNING = "running"
    STOPPING = "stopping"  # asked to stop; a kill timer runs unless shutdown is infinity
    KILLED = "killed"  # killed (or asked to stop, where it cannot be); its exit is awaited
    RESTARTING = "restarting"  # not running: a restart failed to start it, a retry is queued


@dataclass(eq=False)
class Child:
    spec: ChildSpec
    status: Status = Status.STOPPED
    incarnation: int = 0  # 0: never started
    address: Any = None
    killable: bool = False
    normal_exit: bool = False  # this incarnation announced NormalExit

    @property
    def id(self) -> Hashable:
        return self.spec.id

    @property
    def alive(self) -> bool:
        """A process of this child may exist."""
        return self.status not in (Status.STOPPED, Status.RESTARTING)


# ---- the engine --------------------------------------------------------------------------


class Do(enum.Enum):
    """A job's step, done to one child: `(Do.START, id)` and so on."""

    START = "start"  # unless it is alive; wait until it counts as started
    STOP = "stop"  # unless it is not alive; wait until it has exited
    DELETE = "delete"  # forget its spec


Step = tuple[Do, Hashable]


class _Decide(_Incarnation):
    """A child exited by itself: restart it or not, once no job runs (Erlang's EXIT message)."""


@dataclass(frozen=True)
class _Retry:
    """A restart failed to start a child: try again for the first child still RESTARTING,
    counting against the intensity. `terminate_child` takes a child out of the loop; the
    siblings that restart did not reach are RESTARTING too, so they are never stranded."""


class JobKind(enum.Enum):
    """What a job is for: it decides the reply when the job ends (see `_ended`)."""

    BOOT = "boot"  # start every child in order
    START_CHILD = "start_child"
    RESTART_CHILD = "restart_child"
    TERMINATE_CHILD = "terminate_child"
    RESTART = "restart"  # a child exited by itself and is restarted
    SHUTDOWN = "shutdown"


@dataclass(eq=False)
class _Job:
    kind: JobKind
    steps: deque[Step]
    requester: Any = None  # answered when the job ends, or with an error if it is abandoned
    id: Hashable = None  # the child a call names
    waiting: Child | None = None  # the child the current step waits for
    failure: Any = None  # why `waiting` failed to start; set while it is being stopped


class SupervisorCore:
    """One supervisor's children and jobs. Feed it events with `handle`; perform what it returns."""

    def __init__(self, strategy: Strategy, intensity: RestartIntensity) -> None:
        self.strategy = strategy
        self.intensity = intensity
        self.children: list[Child] = []
        self.shutting_down = False  # the shutdown job runs: no more calls or restarts
        #: A bare ActorExitRequest arrived: Thespian ends the actor once the handler returns,
        #: and delivers no wakeups until then.
        self.exit_requested = False
        self.exited = False
        self.gave_up = False  # restarts exceeded the intensity
        self._job: _Job | None = None
        self._queue: deque[Call | _Decide | _Retry] = deque()
        self._exit_replies: list[Reply] = []  # sent once every child has stopped
        self._incarnations = itertools.count(1)  # unique within the supervisor, not per id

    # ---- queries for the shell

    def find(self, id: Hashable) -> Child | None:
        return next((child for child in self.children if child.id == id), None)

    def child_at(self, address: Any) -> Child | None:
        """The live child at `address` (addresses of exited children may be reused)."""
        return next((c for c in self.children if c.alive and c.address == address), None)

    @property
    def idle(self) -> bool:
        """No job runs and nothing is queued: every decision taken so far is carried out."""
        return self._job is None and not self._queue

    # ---- events

    def handle(self, event: Event, now: float) -> list[Effect]:
        """Apply one event at monotonic time `now`; the effects to perform, in order."""
        return self._apply(event) + self._advance(now)

    def _apply(self, event: Event) -> list[Effect]:
        match event:
            case _Incarnation(id, incarnation):
                child = self.find(id)
                if child is not None and child.incarnation == incarnation and child.alive:
                    return self._apply_to(child, event)  # else it is stale
            case Boot(specs, requester):
                self.children = [Child(spec) for spec in specs]
                self._job = _Job(JobKind.BOOT, deque((Do.START, spec.id) for spec in specs),
                                 requester)
            case Call():
                if self.shutting_down:
                    return self._refuse(event)
                self._queue.append(event)
            case ExitRequested():
                return self._exit_request()
        return []

    def _apply_to(self, child: Child, event: _Incarnation) -> list[Effect]:
        """An event about the current incarnation of `child`, which may exist."""
        job = self._job
        match event:
            case ChildCreated(address=address, killable=killable):
                child.address, child.killable = address, killable
            case ChildInitialized() if child.status is Status.STARTING:
                child.status = Status.RUNNING
                if job is not None and job.waiting is child:
                    job.waiting = None
            case ChildInitFailed(reason=reason) if (child.status is Status.STARTING
                                                    and job and job.waiting is child):
                job.failure = reason
                return self._stop(child, None)  # the child may live on: make sure it is gone
            case ChildExited():
                return self._exited(child)
            case ExitAnnounced(reason=reason) if (child.status is Status.RUNNING
                                                  and not self.shutting_down):
                # (While shutting down, the child is stopped in its turn, not now.)
                child.normal_exit = True
                return [Log(logging.INFO, f"child {child.id!r} exits normally ({reason})"),
                        *self._stop(child, None)]
            case KillTimeout() if child.status is Status.STOPPING:
                return [Log(logging.WARNING, f"child {child.id!r} did not stop within "
                                             f"{child.spec.shutdown} s: killed"),
                        *self._kill(child)]
        return []

    def _exited(self, child: Child) -> list[Effect]:
        failure = _start_failure(child) if child.status is Status.STARTING else None
        child.status, child.address = Status.STOPPED, None
        job = self._job
        if job is not None and job.waiting is child:
            job.waiting = None
            failure = failure or job.failure
            if failure is not None:
                self._job = None
                return self._failed(job, child, failure)
        elif not self.shutting_down:
            self._queue.append(_Decide(child.id, child.incarnation))
        return []

    # ---- running jobs

    def _advance(self, now: float) -> list[Effect]:
        """Run steps and queued items until something has to be waited for."""
        effects: list[Effect] = []
        while not self.exited:
            job = self._job
            if job is None:
                if not self._queue:
                    break
                effects += self._dispatch(self._queue.popleft(), now)
            elif job.waiting is not None:
                break
            elif job.steps:
                effects += self._run_step(job, job.steps.popleft())
            else:
                self._job = None
                effects += self._ended(job)
        return effects

    def _ended(self, job: _Job) -> list[Effect]:
        """The job ran all its steps: its reply."""
        child = self.find(job.id)
        match job.kind:
            case JobKind.BOOT:
                return [Reply(job.requester, SupervisorStarted())]
            case JobKind.START_CHILD | JobKind.RESTART_CHILD:
                assert child is not None
                return [Reply(job.requester, ChildStarted(job.id, child.address))]
            case JobKind.TERMINATE_CHILD:
                return [Reply(job.requester, ChildTerminated(job.id))]
            case JobKind.SHUTDOWN:
                self.exited = True
                return [*self._exit_replies, Exit(self.gave_up)]
        return []

    def _failed(self, job: _Job, child: Child, reason: Any) -> list[Effect]:
        """A start step of the job failed: the job ends here, with this outcome."""
        match job.kind:
            case JobKind.BOOT:
                error = StartChildError(child.id, reason)
                self._exit_replies.append(Reply(job.requester, error))
                return [Log(logging.ERROR, str(error)), *self._shut_down()]
            case JobKind.START_CHILD | JobKind.RESTART_CHILD:
                if job.kind is JobKind.START_CHILD:  # Erlang forgets the spec of a new child
                    self.children.remove(child)  # that did not start
                return [Reply(job.requester, StartChildError(child.id, reason))]
            case JobKind.RESTART:
                # Erlang leaves the children after it unstarted until the retry; should
                # terminate_child end the retry, they would stay down with nothing to restart them.
                unreached = (self.find(id) for do, id in job.steps if do is Do.START)
                for waiting in (child, *unreached):
                    if waiting is not None and not waiting.alive:
                        waiting.status = Status.RESTARTING
                self._queue.append(_Retry())
                return [Log(logging.ERROR, f"restarting child {child.id!r} failed: {reason}; "
                                           f"trying again")]
        raise AssertionError(f"a {job.kind} job failed to start {child.id!r}")

    def _run_step(self, job: _Job, step: Step) -> list[Effect]:
        do, id = step
        child = self.find(id)
        if child is None:
            return []
        match do:
            case Do.START if not child.alive:
                child.incarnation = next(self._incarnations)
                child.status, child.normal_exit = Status.STARTING, False
                job.waiting = child
                return [CreateChild(child.spec, child.incarnation)]
            case Do.STOP if child.alive:
                job.waiting = child
                if child.status in (Status.STARTING, Status.RUNNING):
                    return self._stop(child, child.spec.stop_message)
            case Do.DELETE:
                self.children.remove(child)
        return []

    def _stop(self, child: Child, message: Any) -> list[Effect]:
        """Ask the child to stop (`message`, None: ActorExitRequest), or kill it if brutal."""
        if child.spec.shutdown == BRUTAL_KILL:
            return self._kill(child)
        child.status = Status.STOPPING
        return [StopChild(child.address, message), *self._arm_kill_timer(child)]

    def _arm_kill_timer(self, child: Child) -> list[Effect]:
        if not isinstance(shutdown := child.spec.shutdown, float):  # infinity
            return []
        return [ArmKillTimer(child.id, child.incarnation, shutdown)]

    def _kill(self, child: Child) -> list[Effect]:
        child.status = Status.KILLED
        if child.killable:
            return [KillChild(child.id, child.incarnation)]
        return [Log(logging.WARNING, f"cannot kill child {child.id!r} (no process of it is "
                                     f"known): sent it ActorExitRequest instead"),
                StopChild(child.address, None)]

    def _dispatch(self, item: Call | _Decide | _Retry, now: float) -> list[Effect]:
        match item:
            case Call(request, requester):
                return self._call(request, requester)
            case _Decide(id, incarnation):
                child = self.find(id)
                if child and child.incarnation == incarnation and not child.alive:
                    return self._decide(child, now)
            case _Retry():
                if child := next((c for c in self.children if c.status is Status.RESTARTING),
                                 None):
                    return self._restart(child, now)
        return []

    def _decide(self, child: Child, now: float) -> list[Effect]:
        how = "abnormally" if not child.normal_exit else "normally"
        if restarts(child.spec.restart, not child.normal_exit):
            level = logging.INFO if child.normal_exit else logging.ERROR
            return [Log(level, f"child {child.id!r} exited {how}; restarting ({self.strategy})"),
                    *self._restart(child, now)]
        if child.spec.restart is Restart.TEMPORARY:
            self.children.remove(child)
        return [Log(logging.INFO,
                    f"{child.spec.restart} child {child.id!r} exited {how}; not restarted")]

    def _restart(self, child: Child, now: float) -> list[Effect]:
        self.intensity = self.intensity.add(now)
        if self.intensity.exceeded:
            self.gave_up = True
            return [Log(logging.ERROR, f"more than {self.intensity.max_restarts} restarts in "
                                       f"{self.intensity.max_seconds} s: shutting down"),
                    *self._shut_down()]
        siblings = [Sibling(c.id, c.spec.restart, c.alive) for c in self.children]
        plan = plan_restart(self.strategy, siblings, child.id)
        steps: deque[Step] = deque((Do.STOP, i) for i in plan.stop)
        steps += ((Do.DELETE, i) for i in plan.delete)
        steps += ((Do.START, i) for i in plan.start)
        self._job = _Job(JobKind.RESTART, steps)
        return []

    # ---- calls

    def _call(self, request: SupervisorRequest, requester: Any) -> list[Effect]:
        match request:
            case StartChild(spec):
                if existing := self.find(spec.id):
                    return [Reply(requester, AlreadyPresent(spec.id, existing.alive))]
                self.children.append(Child(spec))
                self._job = _Job(JobKind.START_CHILD, deque([(Do.START, spec.id)]), requester,
                                 spec.id)
            case WhichChildren():
                return [Reply(requester, [
                    (c.id, RESTARTING if c.status is Status.RESTARTING else c.address, c.spec.type)
                    for c in self.children])]
            case CountChildren():  # Elixir's: specs, active (alive) children, supervisors, workers
                types = [c.spec.type for c in self.children]
                return [Reply(requester, {"specs": len(self.children),
                                          "active": sum(c.alive for c in self.children),
                                          "supervisors": types.count(ChildType.SUPERVISOR),
                                          "workers": types.count(ChildType.WORKER)})]
            case StopSupervisor():
                self._exit_replies.append(Reply(requester, SupervisorStopped()))
                return self._shut_down()
            case TerminateChild() | RestartChild() | DeleteChild():
                return self._call_on_child(request, requester)
        return []

    def _call_on_child(self, request: TerminateChild | RestartChild | DeleteChild,
                       requester: Any) -> list[Effect]:
        child = self.find(request.id)
        if child is None:
            return [Reply(requester, ChildNotFound(request.id))]
        # Its exit, if queued behind this call: Erlang handles the call first.
        exit_queued = _Decide(child.id, child.incarnation)
        if isinstance(request, TerminateChild):
            if child.status is Status.RESTARTING:  # the queued retry passes it by
                child.status = Status.STOPPED
            # As Erlang's terminate_child takes the child's EXIT: no restart decision follows.
            self._queue = deque(item for item in self._queue if item != exit_queued)
            steps: deque[Step] = deque([(Do.STOP, child.id)])
            if child.spec.restart is Restart.TEMPORARY:
                steps.append((Do.DELETE, child.id))
            self._job = _Job(JobKind.TERMINATE_CHILD, steps, requester, child.id)
        elif child.alive or exit_queued in self._queue:  # in Erlang's order it still runs
            return [Reply(requester, ChildRunning(child.id))]
        elif child.status is Status.RESTARTING:
            return [Reply(requester, ChildRestarting(child.id))]
        elif isinstance(request, RestartChild):
            self._job = _Job(JobKind.RESTART_CHILD, deque([(Do.START, child.id)]), requester,
                             child.id)
        else:
            self.children.remove(child)
            return [Reply(requester, ChildDeleted(child.id))]
        return []

    # ---- shutting down

    def _shut_down(self) -> list[Effect]:
        """Stop every child, the one being stopped first, then the others in reverse order."""
        self.shutting_down = True
        for child in self.children:
            if child.status is Status.RESTARTING:  # its retry goes with the queue
                child.status = Status.STOPPED
        effects = [e for item in self._queue if isinstance(item, Call)
                   for e in self._refuse(item)]
        self._queue.clear()
        stopping = [c for c in self.children if c.status in (Status.STOPPING, Status.KILLED)]
        others = [c for c in reversed(self.children) if c not in stopping]
        self._job = _Job(JobKind.SHUTDOWN, deque((Do.STOP, c.id) for c in stopping + others))
        return effects

    def _refuse(self, call: Call) -> list[Effect]:
        if not isinstance(call.request, StopSupervisor):
            return [Reply(call.requester, SupervisorError("the supervisor is stopping"))]
        if self.exited:
            return [Reply(call.requester, SupervisorStopped())]
        self._exit_replies.append(Reply(call.requester, SupervisorStopped()))
        return []

    def _exit_request(self) -> list[Effect]:
        """Abandon the job, shut down; wakeups are dropped from now on, so the kill timers of
        children being stopped are armed again for the shell to run otherwise."""
        already = self.exit_requested or self.exited
        self.exit_requested = True
        if already:
            return []
        effects: list[Effect] = []
        job = self._job
        if not self.shutting_down:
            if job is not None and job.requester is not None:
                effects.append(Reply(job.requester, SupervisorError("the supervisor is exiting")))
            effects += self._shut_down()
        for child in self.children:
            if child.status is Status.STOPPING:
                effects += self._arm_kill_timer(child)
        return effects


def _start_failure(child: Child) -> Any:
    """Why a child that exited before answering its init message failed to start. One placed
    by the Admin (no process known) most likely had nowhere to go: Thespian found no
    convention member to create it on (within ms), or it died there at once."""
    if child.killable or not child.spec.requirements:
        return "exited before answering its init message"
    return ConfigError("requirements", f"no actor system in the convention has capabilities "
                                       f"matching {child.spec.requirements!r} (or the child "
                                       f"died there before it started)")
