"""Pachka's message batching for Thespian actor systems.

Messages sent to a Pachka server are queued and handed to a `Sink` in batches of
at most `max_batch_size`, at the latest `max_batch_delay` after they arrive;
failed batches are retried, hung exports killed, overload refused, and every
accepted message delivered or drained at shutdown. A `Supervisor` (Elixir's)
starts a Pachka server between its sink system and its producers, and stops
them in reverse order.

Here is what a program types. The rest has one home each: every error in
`pachka_actors.errors`, the sink contract (`Sink`, `Batch`, `DrainingSink`) in
`pachka_actors.sink`, the ready sinks in `pachka_actors.sinks`, the validated
configurations and the supervisor's vocabulary (`ChildType`, `Restart`, `Strategy`,
`BRUTAL_KILL`) in `pachka_actors.config`, the messages for actors that drive a server
or a supervisor themselves in `pachka_actors.messages`, the actors in
`pachka_actors.server` and `pachka_actors.supervisor`, `PartitionStatus` in
`pachka_actors.pool`, and `pachka_actors.metrics` and `pachka_actors.testing`.
"""

import logging

from .config import ChildSpec
from .errors import ActorTimeout, ConfigError, MessagesLost, Overloaded, PachkaError
from .pachka import Pachka
from .pool import PachkaPool
from .producer import BufferedProducer
from .sink import Batch, Sink
from .supervisor import Supervisor

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "ActorTimeout",
    "Batch",
    "BufferedProducer",
    "ChildSpec",
    "ConfigError",
    "MessagesLost",
    "Overloaded",
    "Pachka",
    "PachkaError",
    "PachkaPool",
    "Sink",
    "Supervisor",
]
