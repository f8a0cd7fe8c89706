"""The sink contract: where batches go (Pachka's `Pachka.Sink` behaviour)."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

from .errors import ConfigError, plural

log = logging.getLogger(__name__)

#: Why an export failed: the exception `send_batch` raised or returned, or
#: "killed" (it ran past `export_timeout`) or "exited" (its exporter died without a word).
FailureReason = BaseException | str

KILLED = "killed"
EXITED = "exited"


class Batch(list[Any]):
    """The messages `send_batch` gets, in order: a list with an `id`.

    The id stays the same when the batch is retried (also by another exporter, and
    in a drain), so a sink can tell a batch it wrote already (a killed export that
    had committed) from a new one: the ready sinks' `ledger` does; also across a
    spill (`spill_path`), whose batches the next server sends under their ids. A
    part of a batch split to find a bad message has an id derived from it ("<id>.0",
    "<id>.1"; "<id>.r" and "<id>.x" when the sink named the bad ones).

    `drain_on_terminate` gets one too, whose `parts` say which batches its messages
    are: `(id, count)` for each, in order, covering every message. The ids are kept
    if the drain fails and its batches are exported one by one.
    """

    def __init__(self, messages: Iterable[Any] = (), id: str = "",
                 parts: tuple[tuple[str, int], ...] = ()) -> None:
        super().__init__(messages)
        self.id = id
        self.parts = parts

    def __reduce__(self) -> tuple[Any, ...]:
        return (Batch, (list(self), self.id, self.parts))


class Sink:
    """Base class for sinks; only `send_batch` is required.

    A sink runs in exporter actors (their own OS processes on multi-process bases),
    so it is pickled there: keep connections out of `__init__`; open them in
    `setup`, which each exporter runs once, before its first batch.

    Optional: `drain_on_terminate(self, messages, batch_size, server_value)`. When a
    sink defines it, a stopping server hands it every message still queued
    (including a failed in-flight batch) instead of exporting them batch by batch;
    see `DrainingSink`.
    """

    def send_batch(self, messages: list[Any], server_value: Any) -> BaseException | None:
        """Deliver one batch, in order. Return for success; raise, or return an
        exception instance, to fail the batch: it is retried after `retry_timeout`."""
        raise NotImplementedError

    def setup(self, server_value: Any) -> None:
        """Prepare this exporter's copy of the sink (open a connection), once per exporter,
        while it waits as a spare: set-up overlaps the export before. If it raises, it
        runs again when the batch comes; raising then fails that batch (retried as any
        failed attempt, in a new exporter)."""

    def teardown(self, server_value: Any) -> None:
        """Undo `setup` when the exporter retires while the server runs (its batches done,
        or its batch failed). An error is logged only; the batches are already delivered.
        Not run for an exporter killed (`export_timeout`, server exit) or whose setup failed."""

    def message_size(self, message: Any, server_value: Any) -> int:
        """A message's size in bytes, for `max_batch_bytes` and `critical_queue_bytes`
        (only called when one is set). Measured once per message by the server, and by a
        lingering handle that must know it before the server sees the message; so it must
        be deterministic, and cheap. The default (`default_size`): the length of `bytes`,
        of a `str` in UTF-8, else of the message's pickle. Override it to count what the
        sink will write (a row's encoded length, a protobuf's `ByteSize()`)."""
        return default_size(message)

    def retry_timeout(
        self, retry_num: int, failure_reason: FailureReason, server_value: Any
    ) -> float:
        """Seconds to wait before retry number `retry_num` (1, 2, ...); Pachka's default."""
        return float(retry_num)

    def dead_letter(self, messages: Batch, error: BaseException, server_value: Any) -> None:
        """Take messages that fail on their own (`error`, a `PermanentSinkError`), isolated
        from their batch, which was delivered without them. Runs in an exporter, as
        `send_batch` does (`export_timeout`, retried when it fails). This default logs
        them at ERROR; the server counts them (`stats().dead_lettered`)."""
        shown = ", ".join(f"{message!r:.100}" for message in messages[:5])
        more = f" and {len(messages) - 5} more" if len(messages) > 5 else ""
        log.error("%s dead-lettered (%s): %s%s", plural(len(messages), "message"), error, shown,
                  more)


def default_size(message: Any) -> int:
    """`Sink.message_size`'s default: cheap for bytes and str (an ASCII str's length is its
    UTF-8 length, known without encoding), else the length of the message's pickle."""
    kind = type(message)
    if kind is bytes:
        return len(message)
    if kind is str:
        return len(message) if message.isascii() else len(message.encode("utf-8",
                                                                          "surrogatepass"))
    return len(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def sizer(sink: Sink | None, server_value: Any) -> Callable[[Any], int]:
    """How a server and its handles measure a message: `sink.message_size`, or the default
    when the sink does not override it (no call through the sink then). A size that is not
    an int >= 0, or an exception, is logged at ERROR and the default used: a message is not
    lost for its sizer. `ConfigError` for a `sink` that is no `Sink` instance (a class, given
    to `Pachka.connect` or `BufferedProducer`, would fail at the first message measured)."""
    if sink is not None and not isinstance(sink, Sink):
        raise ConfigError("sink", f"expected the server's Sink instance or None, got {sink!r}")
    if sink is None or type(sink).message_size is Sink.message_size:
        return default_size

    def size(message: Any) -> int:
        try:
            value = sink.message_size(message, server_value)
        except Exception:
            log.exception("message_size raised; using the default size")
            return default_size(message)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            log.error("message_size returned %r, not an int >= 0; using the default size",
                      value)
            return default_size(message)
        return value

    return size


@runtime_checkable
class DrainingSink(Protocol):
    """A sink that takes over the remaining messages at shutdown (a fallback store)."""

    def drain_on_terminate(self, messages: list[Any], batch_size: int, server_value: Any) -> None:
        ...


def retry_delay(sink: Sink, retry_num: int, failure: FailureReason, server_value: Any) -> float:
    """The sink's `retry_timeout` in seconds, or Pachka's default (`Sink.retry_timeout`)
    when it raises or answers something that is not a duration."""
    default = Sink.retry_timeout(sink, retry_num, failure, server_value)
    try:
        delay = sink.retry_timeout(retry_num, failure, server_value)
        if isinstance(delay, timedelta):
            delay = delay.total_seconds()
        if isinstance(delay, int | float) and not isinstance(delay, bool) and delay >= 0:
            return float(delay)
        log.error("retry_timeout returned %r; using %s s", delay, default)
    except Exception:
        log.exception("retry_timeout raised; using %s s", default)
    return default
