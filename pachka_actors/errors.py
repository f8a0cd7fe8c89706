"""Every exception this library raises, in one place.

They cross processes as reply messages, so each pickles with its arguments
intact (`__reduce__` where `__init__` does not take `args` as given).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any


def plural(count: int, noun: str) -> str:
    """`count` of `noun` in words ("1 message", "2 messages"), for errors and logs alike."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class PachkaError(Exception):
    """Base of every error this library raises, so callers can catch them all at once."""


class ConfigError(PachkaError, ValueError):
    """A bad option or child spec; raised before any actor starts, naming the option."""

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"{option}: {problem}")
        self.option = option
        self.problem = problem

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str]]:
        # Crosses processes as a start-failure reply; the default reduce loses `problem`.
        return (type(self), (self.option, self.problem))


class Overloaded(PachkaError):
    """The server refused a message: its queue is at a limit, or it is terminating.

    Pachka's `{:error, :overloaded}`; `terminating` tells the two causes apart, and
    `limit` names the option that was reached ("critical_queue_size",
    "critical_queue_bytes" or "journal_max_bytes"; None when terminating).
    """

    def __init__(self, message: str = "overloaded", *, terminating: bool = False,
                 limit: str | None = None) -> None:
        super().__init__(message)
        self.terminating = terminating
        self.limit = limit

    def __reduce__(self) -> tuple[object, ...]:
        return (_overloaded, (str(self), self.terminating, self.limit))


def _overloaded(message: str, terminating: bool, limit: str | None = None) -> Overloaded:
    return Overloaded(message, terminating=terminating, limit=limit)


class MessageTooLarge(PachkaError, ValueError):
    """A message is larger than `max_batch_bytes`: no batch could hold it, so it is refused
    at the call that sent it and never queued (waiting would not help, unlike `Overloaded`).

    `size` is its size as `Sink.message_size` measures it, `limit` the option's value,
    `index` its position in the list sent (None for a single message).
    """

    def __init__(self, size: int, limit: int, index: int | None = None) -> None:
        where, queued = ("", "it was not") if index is None else (
            f"message {index} of the list: ", "none of the list was")
        super().__init__(f"{where}a message of {size} bytes is larger than "
                         f"max_batch_bytes={limit}; {queued} queued")
        self.size, self.limit, self.index = size, limit, index

    def __reduce__(self) -> tuple[Any, ...]:
        return (MessageTooLarge, (self.size, self.limit, self.index))


class PermanentSinkError(PachkaError):
    """Raised (or returned) by a sink: these messages will fail again as they are.

    A batch that fails with it is split, in halves, until the messages that fail
    on their own are found; the others are delivered, in order, and those go to
    `Sink.dead_letter` instead of being retried for ever. A sink that knows which
    messages are bad gives their positions in the batch as `indices`, and no
    splitting is needed. For what time can cure (a database down, locked, busy)
    raise anything else: that batch is retried, as Pachka does. `error_type` and
    `code` say what the sink saw (the ready sinks: the driver's exception, and
    PostgreSQL's SQLSTATE such as "23505" or SQLite's error name).
    """

    def __init__(self, message: str, error_type: str = "", code: str | None = None, *,
                 indices: Sequence[int] | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.code = code
        self.indices = None if indices is None else tuple(indices)

    def __reduce__(self) -> tuple[Any, ...]:
        # Crosses from the exporter to the server; the default reduce drops the fields.
        return (_permanent, (str(self), self.error_type, self.code, self.indices))


def _permanent(message: str, error_type: str, code: str | None,
               indices: tuple[int, ...] | None) -> PermanentSinkError:
    return PermanentSinkError(message, error_type, code, indices=indices)


class SchemaError(PachkaError):
    """Raised by a ready sink when its table does not fit (missing, a column missing, no
    permission): no message is at fault, so nothing is dead-lettered; the batch is
    retried, with a growing wait, until someone fixes the table. `error_type` and
    `code` are as in `PermanentSinkError`."""

    def __init__(self, message: str, error_type: str = "", code: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (SchemaError, (str(self), self.error_type, self.code))


class UnpicklableMessage(PachkaError, TypeError):
    """A message cannot be pickled, so it cannot cross to the server's process.

    Raised by the call that gave it (`send_message`), so that the message is
    named at its source; nothing else is affected.
    """


class MessagesLost(PachkaError):
    """`count` messages accepted `by` the handle or its server cannot be accounted for, and
    `reason` says why.

    The handle's: its server ended elsewhere, or refused a shipment of its buffer
    (a message that no longer pickles, or that the server's process cannot load).
    Raised by the handle's next call, and again by `stop()` and `close()` with the
    total, so that a program that only checks `stop()` learns of the loss too. The
    server's: `stop()` raises them, counted in `Stats.lost`, after the server gave
    them up at `shutdown_timeout` (its system was shut down meanwhile).
    """

    def __init__(self, count: int, reason: str, by: str = "the handle") -> None:
        super().__init__(count, reason, by)
        self.count = count
        self.reason = reason
        self.by = by

    def __str__(self) -> str:
        return f"{plural(self.count, 'message')} accepted by {self.by} " \
               f"{'was' if self.count == 1 else 'were'} lost: " \
               f"{self.reason}"


class ActorTimeout(PachkaError, TimeoutError):
    """An actor did not answer in time (Thespian's ask returned None)."""


class ActorGone(ActorTimeout):
    """The actor asked is gone (it exited, or was killed): no answer can ever come.

    Thespian says so well before the timeout (multiprocTCPBase answers a send to an
    exited actor within milliseconds), and an actor silent for a while is asked
    whether it still exists. A handle turns it into what its call means: `Overloaded`
    (terminating) for a send, `NotStarted` for `status()`, `MessagesLost` when it
    cost messages.
    """


class AlreadyStarted(PachkaError):
    """A server with this name runs already (Pachka's `{:error, {:already_started, pid}}`)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"a Pachka server named {name!r} is already started")
        self.name = name

    def __reduce__(self) -> tuple[type[AlreadyStarted], tuple[str]]:
        return (type(self), (self.name,))


class NotStarted(PachkaError, LookupError):
    """The actor reached is not a started Pachka server (or supervisor)."""


class SinkError(PachkaError):
    """Stands in for a sink failure that cannot be pickled back to the server."""


class SupervisorError(PachkaError):
    """A supervisor refused a request, or is stopping."""


class StartChildError(SupervisorError):
    """A child failed to start (Elixir's `{:failed_to_start_child, id, reason}`)."""

    def __init__(self, id: Hashable, reason: Any) -> None:
        super().__init__(id, reason)
        self.id = id
        self.reason = reason

    def __str__(self) -> str:
        return f"failed to start child {self.id!r}: {self.reason}"


class ChildNotFound(SupervisorError, LookupError):
    def __init__(self, id: Hashable) -> None:
        super().__init__(id)
        self.id = id

    def __str__(self) -> str:
        return f"no child {self.id!r}"


class ChildRunning(SupervisorError):
    """`restart_child`/`delete_child` of a running child (Elixir's `:running`)."""

    def __init__(self, id: Hashable) -> None:
        super().__init__(id)
        self.id = id

    def __str__(self) -> str:
        return f"child {self.id!r} is running"


class ChildRestarting(SupervisorError):
    """`restart_child`/`delete_child` of a child whose restart failed and will be tried again
    (Erlang's `{error, restarting}`); `terminate_child` ends that loop."""

    def __init__(self, id: Hashable) -> None:
        super().__init__(id)
        self.id = id

    def __str__(self) -> str:
        return f"child {self.id!r} is restarting"


class AlreadyPresent(SupervisorError):
    """`start_child` with an id in use (`{:already_started, pid}` or `:already_present`)."""

    def __init__(self, id: Hashable, running: bool) -> None:
        super().__init__(id, running)
        self.id = id
        self.running = running

    def __str__(self) -> str:
        return f"child {self.id!r} is already {'started' if self.running else 'present'}"


class PartitionUnreachable(PachkaError):
    """A partition's server cannot be reached: its host left the convention or did not answer.

    What its server had queued is lost with the host unless it drained (docs/scale-out.md).
    """

    def __init__(self, partition: int, reason: str) -> None:
        super().__init__(partition, reason)
        self.partition = partition
        self.reason = reason

    def __str__(self) -> str:
        return f"partition {self.partition} is unreachable: {self.reason}"
