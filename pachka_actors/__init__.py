"""Pachka's message batching for Thespian actor systems.

Messages sent to a Pachka server are queued and handed to a `Sink` in batches of
at most `max_batch_size`, at the latest `max_batch_delay` after they arrive;
failed batches are retried, hung exports killed, overload refused, and every
accepted message delivered or drained at shutdown. A `Supervisor` (Elixir's)
starts a Pachka server between its sink system and its producers, and stops
them in reverse order.

What a program types is here (`BufferedProducer` is for actors that feed a server);
the messages for actors that drive a server or a supervisor themselves are in
`pachka_actors.messages`, every error in
`pachka_actors.errors`, and the validated configurations in `pachka_actors.config`.
"""

import logging

from . import messages
from ._restart import Restart, Strategy
from .config import BRUTAL_KILL, ChildSpec, ChildType
from .errors import (
    ActorTimeout,
    AlreadyStarted,
    ConfigError,
    MessagesLost,
    NotStarted,
    Overloaded,
    PachkaError,
    PartitionUnreachable,
    StartChildError,
    SupervisorError,
    UnpicklableMessage,
)
from .pachka import Pachka
from .pool import PachkaPool, PartitionStatus
from .producer import BufferedProducer
from .server import PachkaServer
from .sink import DrainingSink, Sink
from .supervisor import Supervisor, SupervisorActor

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "BRUTAL_KILL",
    "ActorTimeout",
    "AlreadyStarted",
    "BufferedProducer",
    "ChildSpec",
    "ChildType",
    "ConfigError",
    "DrainingSink",
    "MessagesLost",
    "NotStarted",
    "Overloaded",
    "Pachka",
    "PachkaError",
    "PachkaPool",
    "PachkaServer",
    "PartitionStatus",
    "PartitionUnreachable",
    "Restart",
    "Sink",
    "StartChildError",
    "Strategy",
    "Supervisor",
    "SupervisorActor",
    "SupervisorError",
    "UnpicklableMessage",
    "messages",
]
