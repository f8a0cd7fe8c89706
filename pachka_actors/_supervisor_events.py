"""What the supervisor's shell and its pure core exchange: events in, effects out, and the
child records the shell reads.

Apart from `_supervisor_core` so that the engine there reads on its own, and so
that the shell (`supervisor.py`) and the model test see the whole contract in
one place. Children are named by `(id, incarnation)`: see `_supervisor_core`.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from .config import ChildSpec
from .messages import SupervisorRequest

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
    during_start: Any = None  # why, if it exits before answering its init message


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


# ---- children ---------------------------------------------------------------------------


class Status(enum.Enum):
    STOPPED = "stopped"  # not running: not started yet, exited, or terminated
    STARTING = "starting"  # created; its init reply is awaited
    RUNNING = "running"
    STOPPING = "stopping"  # asked to stop; a kill timer runs unless shutdown is infinity
    KILLED = "killed"  # killed; its exit is awaited
    RESTARTING = "restarting"  # not running: a restart failed to start it, a retry is queued


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
        """A process of this child may exist."""
        return self.status not in (Status.STOPPED, Status.RESTARTING)
