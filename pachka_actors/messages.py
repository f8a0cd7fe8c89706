"""The messages a Pachka server and a supervisor understand, for actors that use them.

Actors inside a Thespian system cannot block on a handle; they `self.send` these
and get exactly one reply each, sent to the sender. Pure data: no Thespian here.

Pachka server:

- `SendMessage(message)`: `Accepted(count=1)`, or `Accepted(count=0,
  refused=Overloaded(...))`, or `refused=MessageTooLarge(...)` for a message larger
  than `max_batch_bytes`.
- `SendMessages(messages)`: `Accepted(count=n)`: the first n were queued, in
  order; `refused` says why the rest were not. A list holding a message larger
  than `max_batch_bytes` is refused whole (`MessageTooLarge` naming its index).
- `RequestCredit(count)`: `Granted(credit, count, refused, bytes,
  max_batch_bytes)`; then `SendMessages(messages, credit=credit)` is always
  accepted whole (but for a message larger than `max_batch_bytes`). With
  `ask=n` it asks for the next room too: `Accepted.granted` is the grant, or None
  when there is no room for it (no refusal is counted: ask with `RequestCredit`).
- `Stop()`: `Stopped(stats)`, once every accepted message is delivered or drained
  and the server is exiting; `stats` are its final counters.
- `GetStatus()`: `ServerStatus`.
- `GetStats()`: `Stats` (`pachka_actors.metrics`), the counters since start.
- `StartServer(config)`: `Started(address)`, or an exception instance
  (`ConfigError`, `AlreadyStarted`).
- `FireTimer(timer)` fires a timer by hand on a server started with
  `timers="manual"` (take it from `ServerStatus.timer`).

Supervisor: `StartSupervisor`, `StartChild`, `TerminateChild`, `RestartChild`,
`DeleteChild`, `WhichChildren`, `CountChildren`, `StopSupervisor`, each answered
with the reply its docstring names or an exception instance; `NormalExit` is
sent by a child that wants to exit normally.
"""

from __future__ import annotations

import pickle
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ._core_events import ServerStatus as ServerStatus
from ._core_events import State as State
from ._core_events import Timer as Timer
from ._core_events import TimerKind as TimerKind
from .config import ChildSpec, PachkaConfig, SupervisorConfig
from .errors import MessageTooLarge, Overloaded

if TYPE_CHECKING:
    from .metrics import Stats  # which imports this module

# ---- Pachka server ------------------------------------------------------------------------


@dataclass(frozen=True)
class SendMessage:
    message: Any


@dataclass(frozen=True, repr=False)
class SendMessages:
    """`credit`: the grant these messages were buffered under (see `RequestCredit`).

    Under a credit, `ask`: room for that many messages more, asked for in the same round
    trip (`ask_size`: as `RequestCredit.size`); answered in `Accepted.granted` if the
    queue has room once these messages are in it."""

    messages: list[Any]
    credit: int | None = None
    ask: int = 0
    ask_size: int = 0

    def __repr__(self) -> str:
        # Thespian formats every message it sends for a debug line: keep that cheap.
        return f"SendMessages({len(self.messages)} messages, credit={self.credit}, " \
               f"ask={self.ask})"


@dataclass(frozen=True, repr=False)
class CheckLoadable:
    """Whether the server's process can load `messages`; nothing is queued. A shipment
    refused by Thespian (the receiver could not unpickle it: a class defined in
    `__main__` after the system started) is probed with it, so that only the
    messages that cannot cross are dropped. Answered with `Accepted(len(messages))`."""

    messages: list[Any]

    def __repr__(self) -> str:
        return f"CheckLoadable({len(self.messages)} messages)"


@dataclass(frozen=True)
class Accepted:
    """Reply to the sender: `count` messages taken, in order; the rest refused for `refused`.

    Under a credit every message is taken but those larger than `max_batch_bytes` (a
    producer that measured them otherwise than the server), which `refused` then names;
    `granted`: the next grant, when the shipment asked for one and there was room."""

    count: int
    refused: Overloaded | MessageTooLarge | None = None
    granted: Granted | None = None


@dataclass(frozen=True)
class RequestCredit:
    """Room for `count` messages, reserved now, for a producer that buffers and ships later.

    The reply is `Granted(credit, count, refused)`. The producer then ships up to
    `count` messages in one `SendMessages(messages, credit=credit)`, which the
    server always accepts (even while stopping) and which returns unused credits.
    Grants unused after `credit_timeout` expire.

    `wait` (seconds): when there is no room, wait up to that long for some (in
    turn with other waiting requests) before answering; 0 answers at once.
    `size`: with `critical_queue_bytes`, the bytes of the message that needs the room:
    room is granted only if it fits (0: any room will do).
    """

    count: int
    wait: float = 0.0
    size: int = 0


@dataclass(frozen=True)
class Granted:
    """Reply to `RequestCredit`: room for `count` messages under grant `credit`, or refusal.

    `bytes`: the room in bytes (None: no `critical_queue_bytes`, no limit);
    `max_batch_bytes`: the server's, so that the producer refuses a larger message at
    once. A producer measuring either way measures as the server does (`Sink.message_size`).
    """

    credit: int | None
    count: int
    refused: Overloaded | None = None
    bytes: int | None = None
    max_batch_bytes: int | None = None


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Stopped:
    """The reply to `Stop`: the server's counters as it exits (`pachka_actors.metrics.Stats`)."""

    stats: Stats


@dataclass(frozen=True)
class GetStatus:
    pass


@dataclass(frozen=True)
class GetStats:
    """Reply: `pachka_actors.metrics.Stats`, the server's counters since it started."""


@dataclass(frozen=True)
class FireTimer:
    """Fire `timer` now, on a server started with `timers="manual"` (take it from
    `ServerStatus.timer`): tests step a server through its states this way."""

    timer: Timer


@dataclass(frozen=True)
class StartServer:
    """The init message of a server actor (also its supervisor child spec's).

    It crosses processes with its config pickled inside it, so that a config the
    actor's process cannot load (a sink class defined in `__main__` after the
    actor system started, a module missing there) arrives as `unloadable`, the
    reason, and is answered with a `ConfigError` naming it, rather than failing
    inside Thespian with no reply.
    """

    config: PachkaConfig | None
    unloadable: str | None = None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if self.config is None:  # relayed on after an earlier process could not load it
            return (StartServer, (None, self.unloadable))
        return (_load_start_server, (pickle.dumps(self.config),))


def _load_start_server(blob: bytes) -> StartServer:
    try:
        return StartServer(pickle.loads(blob))
    except Exception as exc:
        return StartServer(None, f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class Started:
    address: Any


# ---- supervisor ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StartSupervisor:
    """The init message of a `SupervisorActor`. Reply: `SupervisorStarted` or `StartChildError`.

    `supervised`: started by a supervisor (the sender), which is then sent
    `NormalExit("shutdown")` when this one gives up, as Elixir's exits with :shutdown.
    """

    config: SupervisorConfig
    supervised: bool = False


@dataclass(frozen=True)
class StartChild:
    """Add a child and start it. Reply: `ChildStarted`, or `AlreadyPresent`/`StartChildError`."""

    spec: ChildSpec


@dataclass(frozen=True)
class TerminateChild:
    """Stop a child, keeping its spec (a temporary child's goes). Reply: `ChildTerminated`."""

    id: Hashable


@dataclass(frozen=True)
class RestartChild:
    """Start a child that is not running. Reply: `ChildStarted`, or `ChildRunning`,
    `ChildRestarting`."""

    id: Hashable


@dataclass(frozen=True)
class DeleteChild:
    """Forget the spec of a child that is not running. Reply: `ChildDeleted`, or
    `ChildRunning`, `ChildRestarting`."""

    id: Hashable


@dataclass(frozen=True)
class WhichChildren:
    """Reply: a list of `(id, address, type)`, in start order; the address is None for a
    child that is not running, `RESTARTING` for one a failed restart left to its retry."""


@dataclass(frozen=True)
class CountChildren:
    """Reply: a dict with keys specs, active, supervisors, workers."""


@dataclass(frozen=True)
class StopSupervisor:
    """Stop the children in reverse order, then exit. Reply: `SupervisorStopped`."""


@dataclass(frozen=True)
class NormalExit:
    """Sent by a child to its supervisor (the sender of its init message) to exit normally.

    The supervisor then stops it (with `ActorExitRequest`, within its shutdown
    timeout) and treats the exit as normal: a transient child is not restarted.
    Any other exit of a child the supervisor did not ask to stop is abnormal.
    `reason` is logged; a supervisor that gives up sends "shutdown", as Elixir's does.
    """

    reason: str = "normal"


@dataclass(frozen=True)
class ChildStarted:
    id: Hashable
    address: Any


@dataclass(frozen=True)
class ChildTerminated:
    id: Hashable


@dataclass(frozen=True)
class ChildDeleted:
    id: Hashable


@dataclass(frozen=True)
class SupervisorStarted:
    pass


@dataclass(frozen=True)
class SupervisorStopped:
    pass


#: In `WhichChildren`'s reply, instead of an address: the child's restart failed to start it
#: and is tried again (Elixir's `:restarting`).
RESTARTING: Final = "restarting"

#: The calls a supervisor serves one at a time, in arrival order.
SupervisorRequest = (StartChild | TerminateChild | RestartChild | DeleteChild | WhichChildren
                     | CountChildren | StopSupervisor)
