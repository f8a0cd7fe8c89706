"""The server core's vocabulary: its states, timers, the events it takes, the effects it returns.

Pure data, apart from the machine in `core.py` (which re-exports all of it, so
`pachka_actors.core` is its one import path). A wire message the core answers
with (`Accepted`, `Granted`) is a value inside an effect, never an effect itself.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .sink import Batch, FailureReason


class State(enum.Enum):
    """Pachka's server states, plus `DRAINING` (in `drain_on_terminate`) and final `STOPPED`."""

    IDLE = "idle"
    EXPORTING = "exporting"
    RETRY_BACKOFF = "retry_backoff"
    DRAINING = "draining"
    STOPPED = "stopped"


class TimerKind(enum.Enum):
    BATCH = "batch"  # max_batch_delay: export what is queued
    EXPORT = "export"  # export_timeout: kill the export
    RETRY = "retry"  # retry_timeout: export the failed batch again
    CREDIT = "credit"  # credit_timeout: free room a producer reserved and never used
    WAIT = "wait"  # a request for room that waited in vain
    SHUTDOWN = "shutdown"  # shutdown_timeout: the bound on finishing after a bare exit


@dataclass(frozen=True)
class Timer:
    """One timer the core armed; `token` is unique per server, so a stale one is told apart."""

    kind: TimerKind
    token: int


class DeadLetters(Batch):
    """Messages that failed on their own (`error`, a `PermanentSinkError`): exported like a
    batch, but to `Sink.dead_letter`."""

    def __init__(self, messages: Batch, error: BaseException) -> None:
        super().__init__(messages, messages.id)
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        return (DeadLetters, (Batch(self, self.id), self.error))


@dataclass(frozen=True)
class ServerStatus:
    """A snapshot for observability and tests (the reply to `GetStatus`)."""

    state: State
    terminating: bool
    queue_length: int
    batch_length: int
    reserved: int
    retry_num: int
    timer: Timer | None
    export_id: int | None
    queue_bytes: int = 0  # of the queued messages, when a byte limit is set


# ---- events -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MessagesReceived:
    """Messages to queue. Under `credit` (a grant's id) they were promised a place already:
    all are taken, and the grant is closed, its unused credits returned. `sizes`: each
    message's size, measured by the shell, when the core has a byte limit (else None).
    `ask`, `ask_size`: under a credit, the next grant asked for with them (`CreditRequested`
    with no wait, granted in the reply only if there is room, refused silently)."""

    messages: Sequence[Any]
    credit: int | None = None
    sizes: Sequence[int] | None = None
    ask: int = 0
    ask_size: int = 0


@dataclass(frozen=True)
class CreditRequested:
    """A producer asks for room for `count` messages it will buffer and ship later.

    With `wait` (seconds) a request that finds no room waits for some, in turn,
    and `requester` is answered by a `Reply` once room frees or `wait` passes.
    `size`: the bytes of the message that needs the room, which must fit (0: unknown).
    """

    count: int
    wait: float = 0.0
    requester: Any = None
    size: int = 0


@dataclass(frozen=True)
class TimerFired:
    timer: Timer


@dataclass(frozen=True)
class ExportDone:
    """The export `export_id` ended: `failure` is None when the sink took the batch.
    `returned` (for the metrics; the core ignores it): the sink returned its failure."""

    export_id: int
    failure: FailureReason | None = None
    returned: bool = False


@dataclass(frozen=True)
class StopRequested:
    """Pachka's stop: termination mode, with no time limit of its own."""


@dataclass(frozen=True)
class ExitRequested:
    """A bare `ActorExitRequest` (`ActorSystem.shutdown()`, a parent's exit): a stop that
    must end within `shutdown_timeout`, after which what is left is drained, spilled or
    reported lost."""


@dataclass(frozen=True)
class DrainDone:
    """`drain_on_terminate` returned (`failure` None) or raised."""

    failure: BaseException | None = None


@dataclass(frozen=True)
class Restored:
    """Batches a previous server kept (`spill_path`, `journal_path`): accepted before, sent
    first, under their ids (so a ledger knows them). `sizes`: their messages' sizes, batch
    by batch, when the core has a byte limit."""

    batches: Sequence[Batch]
    sizes: Sequence[Sequence[int]] | None = None


@dataclass(frozen=True)
class JournalFull:
    """The crash journal is at `journal_max_bytes`, compacted (`why`), or has room again
    (None): new messages and room for them are refused meanwhile, as at a queue limit."""

    why: str | None


# ---- notes: for a journal (`journal_path`), what changed the accepted, undelivered set ----


@dataclass(frozen=True)
class Queued:
    """Accepted `messages` joined the queue, in order."""

    messages: Sequence[Any]


@dataclass(frozen=True)
class Formed:
    """`batch` was made from the head of the queue (its messages leave the queue)."""

    batch: Batch


@dataclass(frozen=True)
class Replaced:
    """The batch `batch_id` goes on as `parts` (a failed batch split, an oversized one
    restored): its messages are theirs now."""

    batch_id: str
    parts: tuple[Batch, ...]


@dataclass(frozen=True)
class Delivered:
    """The batches `batch_ids` were delivered, dead-lettered or drained: nothing to keep."""

    batch_ids: tuple[str, ...]


Note = Queued | Formed | Replaced | Delivered


Event = (MessagesReceived | CreditRequested | TimerFired | ExportDone | StopRequested
         | ExitRequested | DrainDone | Restored | JournalFull)


# ---- effects ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """Reply `value` to the sender of the event being handled."""

    value: Any


@dataclass(frozen=True)
class Reply:
    """Reply `value` to an earlier requester (a credit request that waited)."""

    to: Any
    value: Any


@dataclass(frozen=True)
class ArmTimer:
    timer: Timer
    delay: float


@dataclass(frozen=True)
class ArmRetryTimer:
    """The shell asks the sink's `retry_timeout` for the delay: user code stays out of here."""

    timer: Timer
    retry_num: int
    failure: FailureReason


@dataclass(frozen=True)
class CancelTimer:
    """The timer is superseded: it must not fire."""

    timer: Timer


@dataclass(frozen=True)
class StartExport:
    export_id: int
    batch: Batch
    retry_num: int


@dataclass(frozen=True)
class KillExport:
    export_id: int


@dataclass(frozen=True)
class Drain:
    messages: Batch


@dataclass(frozen=True)
class Spill:
    """Keep `batches` (accepted, not delivered in time) for the next server, in one go."""

    batches: list[Batch]
    why: str


@dataclass(frozen=True)
class Lose:
    """`count` accepted messages not confirmed delivered (`why`; a killed export's batch
    among them, which the sink may have taken) and kept nowhere: nothing was configured
    to. Logged, counted (`Stats.lost`), and raised by `stop()`."""

    count: int
    why: str


@dataclass(frozen=True)
class Finish:
    """Nothing is held any more: the server answers its stop requesters and exits."""


@dataclass(frozen=True)
class Log:
    level: int
    text: str


Effect = (Answer | Reply | ArmTimer | ArmRetryTimer | CancelTimer | StartExport | KillExport
          | Drain | Spill | Lose | Finish | Log)
