"""Pachka's message batching for Thespian actor systems.

Messages sent to a Pachka server are queued and handed to a `Sink` in batches of
at most `max_batch_size`, at the latest `max_batch_delay` after they arrive;
failed batches are retried, hung exports killed, overload refused, and every
accepted message delivered or drained at shutdown. A `Supervisor` (Elixir's)
starts a Pachka server between its sink system and its producers, and stops
them in reverse order.
"""

from .config import PachkaConfig
from .core import ServerStatus, State, TimerFired, TimerKind
from .errors import ActorTimeout, ConfigError, Overloaded, PachkaError
from .messages import (
    Accepted,
    AlreadyStarted,
    GetStatus,
    Granted,
    NotStarted,
    RequestCredit,
    SendMessage,
    SendMessages,
    Started,
    StartServer,
    Stop,
    Stopped,
)
from .pachka import DEFAULT_LINGER, Pachka
from .server import PachkaServer, SinkError
from .sink import EXITED, KILLED, DrainingSink, FailureReason, Sink
from .supervisor import (
    BRUTAL_KILL,
    INFINITY,
    AlreadyPresent,
    ChildNotFound,
    ChildRunning,
    ChildSpec,
    ChildType,
    NormalExit,
    Restart,
    StartChildError,
    Strategy,
    Supervisor,
    SupervisorError,
)

__all__ = [
    "BRUTAL_KILL",
    "DEFAULT_LINGER",
    "EXITED",
    "INFINITY",
    "KILLED",
    "Accepted",
    "ActorTimeout",
    "AlreadyPresent",
    "AlreadyStarted",
    "ChildNotFound",
    "ChildRunning",
    "ChildSpec",
    "ChildType",
    "ConfigError",
    "DrainingSink",
    "FailureReason",
    "GetStatus",
    "Granted",
    "NormalExit",
    "NotStarted",
    "Overloaded",
    "Pachka",
    "PachkaConfig",
    "PachkaError",
    "PachkaServer",
    "RequestCredit",
    "Restart",
    "SendMessage",
    "SendMessages",
    "ServerStatus",
    "Sink",
    "SinkError",
    "StartChildError",
    "StartServer",
    "Started",
    "State",
    "Stop",
    "Stopped",
    "Strategy",
    "Supervisor",
    "SupervisorError",
    "TimerFired",
    "TimerKind",
]
