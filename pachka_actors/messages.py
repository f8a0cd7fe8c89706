"""The messages a Pachka server understands, for actors that drive it with `self.send`.

Every request gets exactly one reply, sent to its sender:

- `SendMessage(message)`: `Accepted(count=1)`, or `Accepted(count=0,
  refused=Overloaded(...))`.
- `SendMessages(messages)`: `Accepted(count=n)`: the first n were queued, in
  order; `refused` says why the rest were not.
- `RequestCredit(count)`: `Granted(credit, count, refused)`; then
  `SendMessages(messages, credit=credit)` is always accepted whole.
- `Stop()`: `Stopped()`, once every accepted message is delivered or drained and
  the server is exiting.
- `GetStatus()`: `ServerStatus`.
- `StartServer(config)`: `Started(address)`, or an exception instance
  (`ConfigError`, `AlreadyStarted`).

`TimerFired(kind, token)` fires a timer by hand on a server started with
`timers="manual"` (take the token from `ServerStatus.timer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._process import ProcessId
from .config import PachkaConfig
from .core import Accepted, ExportFinished, Granted, ServerStatus, Stopped, TimerFired
from .errors import PachkaError
from .sink import Sink

__all__ = [
    "Accepted",
    "AlreadyStarted",
    "ExportBatch",
    "ExportFinished",
    "ExporterStarted",
    "GetStatus",
    "Granted",
    "NotStarted",
    "RequestCredit",
    "SendMessage",
    "SendMessages",
    "ServerStatus",
    "StartServer",
    "Started",
    "Stop",
    "Stopped",
    "TimerFired",
]


@dataclass(frozen=True)
class SendMessage:
    message: Any


@dataclass(frozen=True, repr=False)
class SendMessages:
    """`credit`: the grant these messages were buffered under (see `RequestCredit`)."""

    messages: list[Any]
    credit: int | None = None

    def __repr__(self) -> str:
        # Thespian formats every message it sends for a debug line: keep that cheap.
        return f"SendMessages({len(self.messages)} messages, credit={self.credit})"


@dataclass(frozen=True)
class RequestCredit:
    """Room for `count` messages, reserved now, for a producer that buffers and ships later.

    The reply is `Granted(credit, count, refused)`. The producer then ships up to
    `count` messages in one `SendMessages(messages, credit=credit)`, which the
    server always accepts (even while stopping) and which returns unused credits.
    Grants unused after `credit_timeout` expire.
    """

    count: int


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class GetStatus:
    pass


@dataclass(frozen=True)
class StartServer:
    """The init message of a server actor (also its supervisor child spec's)."""

    config: PachkaConfig


@dataclass(frozen=True)
class Started:
    address: Any


class AlreadyStarted(PachkaError):
    """A server with this name runs already (Pachka's `{:error, {:already_started, pid}}`)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"a Pachka server named {name!r} is already started")
        self.name = name

    def __reduce__(self) -> tuple[type[AlreadyStarted], tuple[str]]:
        return (type(self), (self.name,))


class NotStarted(PachkaError, LookupError):
    """The actor reached is not a started Pachka server."""


# ---- between a server and its exporters ---------------------------------------------------


@dataclass(frozen=True, repr=False)
class ExportBatch:
    export_id: int
    batch: list[Any]
    sink: Sink
    server_value: Any

    def __repr__(self) -> str:
        return f"ExportBatch({self.export_id}, {len(self.batch)} messages)"


@dataclass(frozen=True)
class ExporterStarted:
    """Sent before `send_batch` runs, so that the server can SIGKILL a hung exporter."""

    export_id: int
    process: ProcessId
