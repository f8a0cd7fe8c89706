"""Pachka's message batching for Thespian actor systems.

Messages sent to a Pachka server are queued and handed to a `Sink` in batches of
at most `max_batch_size`, at the latest `max_batch_delay` after they arrive;
failed batches are retried, hung exports killed, overload refused, and every
accepted message delivered or drained at shutdown.
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

__all__ = [
    "DEFAULT_LINGER",
    "EXITED",
    "KILLED",
    "Accepted",
    "ActorTimeout",
    "AlreadyStarted",
    "ConfigError",
    "DrainingSink",
    "FailureReason",
    "GetStatus",
    "Granted",
    "NotStarted",
    "Overloaded",
    "Pachka",
    "PachkaConfig",
    "PachkaError",
    "PachkaServer",
    "RequestCredit",
    "SendMessage",
    "SendMessages",
    "ServerStatus",
    "Sink",
    "SinkError",
    "StartServer",
    "Started",
    "State",
    "Stop",
    "Stopped",
    "TimerFired",
    "TimerKind",
]
