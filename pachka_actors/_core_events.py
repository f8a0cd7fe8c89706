"""The vocabulary of the server core: the events it takes and the effects it returns.

Pure data, kept apart from the machine in `core.py` (which re-exports it), so that
the machine reads on its own and the shell sees what it must translate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .messages import Accepted, Granted, Stopped, TimerFired, TimerKind
from .sink import FailureReason

# ---- events -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MessagesReceived:
    """Messages to queue. Under `credit` (a grant's id) they were promised a place already:
    all are taken, and the grant is closed, its unused credits returned."""

    messages: Sequence[Any]
    credit: int | None = None


@dataclass(frozen=True)
class CreditRequested:
    """A producer asks for room for `count` messages it will buffer and ship later.

    With `wait` (seconds) a request that finds no room waits for some, in turn,
    and `requester` is answered by a `Reply` once room frees or `wait` passes.
    """

    count: int
    wait: float = 0.0
    requester: Any = None


@dataclass(frozen=True)
class ExportFinished:
    """The exporter of `export_id` is done: `failure` is None on success.

    For the logs and metrics only (the core ignores them): `returned`, the sink
    returned its failure rather than raising it; `detail`, the traceback text.
    """

    export_id: int
    failure: FailureReason | None = None
    returned: bool = False
    detail: str | None = None


@dataclass(frozen=True)
class StopRequested:
    pass


@dataclass(frozen=True)
class ExitRequested:
    """A bare `ActorExitRequest`: finish within this handler, bounded by `shutdown_timeout`.

    The in-flight exporter is killed and its batch exported again at once (at
    least once); a pending backoff ends at once; open credits are given up (their
    producers cannot ship any more); every later export runs `now`.
    """


@dataclass(frozen=True)
class DrainFinished:
    """`drain_on_terminate` returned (`failure` None) or raised."""

    failure: BaseException | None = None


@dataclass(frozen=True)
class Restored:
    """Messages a previous server spilled (`spill_path`): accepted before, queued first."""

    messages: Sequence[Any]


Event = (MessagesReceived | CreditRequested | TimerFired | ExportFinished | StopRequested
         | ExitRequested | DrainFinished | Restored)


# ---- effects ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Spill:
    """Write `messages` (accepted, not delivered in time) to the spill file, in one go."""

    messages: list[Any]
    why: str


@dataclass(frozen=True)
class Reply:
    """An answer to an earlier request (a credit request that waited), not the one handled."""

    to: Any
    value: Any


@dataclass(frozen=True)
class ArmTimer:
    kind: TimerKind
    token: int
    delay: float


@dataclass(frozen=True)
class ArmRetryTimer:
    """The shell asks the sink's `retry_timeout` for the delay: user code stays out of here."""

    token: int
    retry_num: int
    failure: FailureReason


@dataclass(frozen=True)
class CancelTimer:
    """The timer `token` is superseded: it must not fire."""

    token: int


@dataclass(frozen=True)
class StartExport:
    """`now`: export within the current handler (finishing); `spare`: more exports follow,
    so an exporter may be prepared ahead."""

    export_id: int
    batch: list[Any]
    retry_num: int
    now: bool = False
    spare: bool = True


@dataclass(frozen=True)
class KillExport:
    export_id: int


@dataclass(frozen=True)
class Drain:
    messages: list[Any]


@dataclass(frozen=True)
class Log:
    level: int
    text: str


Effect = (Accepted | Granted | Reply | ArmTimer | ArmRetryTimer | CancelTimer | StartExport
          | KillExport | Drain | Spill | Stopped | Log)
