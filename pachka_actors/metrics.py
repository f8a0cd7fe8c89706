"""What a server counts: plain `Stats` for everyone, OpenTelemetry instruments where installed.

A library depends on the OpenTelemetry *API* only and leaves the SDK to the
application (the `otel` extra installs the API). The counters live in the
server's process: on multi-process bases that is a forked actor process, which
inherits the global MeterProvider the application configured before
`ActorSystem()`; with the `meter_provider` server option, a picklable callable
that returns a provider, run in the server's process, is used instead. Without
the API nothing but the plain counters is kept.

The instruments mirror OpenTelemetry's semantic conventions for the SDK's own
batch processors (`otel.sdk.processor.<signal>.queue.size`, `.queue.capacity`,
`.processed` with `error.type`), under `pachka.` names: a Pachka server is not
an SDK component, but a dashboard for one reads the other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ._core_events import (
    Answer,
    CreditRequested,
    DeadLetters,
    Drain,
    DrainDone,
    Effect,
    Event,
    ExportDone,
    KillExport,
    Lose,
    MessagesReceived,
    Reply,
    StartExport,
)
from .errors import MessageTooLarge, Overloaded
from .messages import Accepted, Granted
from .sink import EXITED, KILLED

try:
    from opentelemetry import metrics as otel
except ImportError:  # the `otel` extra is not installed
    otel = None  # type: ignore[assignment]

#: Why a message was refused, as named in `Stats` (`refused_queue_full`, `refused_terminating`,
#: `refused_too_large`).
QUEUE_FULL = "queue_full"
TERMINATING = "terminating"
TOO_LARGE = "too_large"

#: The `error.type` of a refused message on `pachka.messages.processed`: the values the
#: conventions prescribe for an item dropped by a full queue or by a processor shut down,
#: and ours for one larger than `max_batch_bytes`.
REFUSED_ERROR_TYPES = {QUEUE_FULL: "queue_full", TERMINATING: "already_shutdown",
                       TOO_LARGE: "too_large"}

#: Why an export failed, as the `error.type` of `pachka.export.failures`; also `KILLED`
#: ("killed") and `EXITED` ("exited"), the failure reasons of `pachka_actors.sink`.
RAISED, RETURNED = "raised", "returned"


@dataclass(frozen=True)
class Stats:
    """A server's counters since it started, and its queue now (the reply to `GetStats`)."""

    accepted: int = 0
    refused_queue_full: int = 0
    refused_terminating: int = 0
    refused_too_large: int = 0
    exported: int = 0
    batches_exported: int = 0
    failures_raised: int = 0
    failures_returned: int = 0
    failures_killed: int = 0
    failures_exited: int = 0
    retries: int = 0
    drained: int = 0
    dead_lettered: int = 0
    lost: int = 0  # accepted, then given up at shutdown_timeout with nowhere to keep them
    queue_length: int = 0
    batch_length: int = 0
    queue_bytes: int = 0  # of the queued messages, with a byte limit set


class Metrics:
    """One server's counters, read off the core's events and effects; nothing here decides."""

    def __init__(self, server: str, meter_provider: Callable[[], Any] | None = None,
                 gauges: Callable[[], tuple[int, int, int]] | None = None,
                 capacity: int = 0) -> None:
        #: export id: batch size, start, whether it is dead letters
        self._exports: dict[int, tuple[int, float, bool]] = {}
        self._counts: dict[str, int] = {f.name: 0 for f in dataclasses.fields(Stats)}
        self._draining = 0  # the messages of the drain under way
        self._gauges = gauges or (lambda: (0, 0, 0))
        self._attributes = {"pachka.server": server}
        self._otel = _Instruments(server, meter_provider, self._gauges, capacity) \
            if otel else None

    def record(self, event: Event, effects: Sequence[Effect], now: float) -> None:
        """Count what one core step did. A refused credit request counts as one refused
        message: the producer's message that needed the room."""
        if type(event) is MessagesReceived:  # the hot path: the reply is the first effect
            answer = effects[0]
            assert isinstance(answer, Answer) and isinstance(answer.value, Accepted)
            reply = answer.value
            if reply.count:
                self.on_accepted(reply.count)
            if reply.refused is not None:
                self.on_refused(len(event.messages) - reply.count, _reason(reply.refused))
            if len(effects) == 1:
                return
        match event:
            case CreditRequested():
                for effect in effects:
                    if isinstance(effect, Answer) and isinstance(effect.value, Granted) \
                            and effect.value.refused is not None and not effect.value.count:
                        self.on_refused(1, TERMINATING if effect.value.refused.terminating
                                        else QUEUE_FULL)
            case ExportDone(export_id, failure, returned):
                if (started := self._exports.pop(export_id, None)) is not None:
                    size, since, letters = started
                    if failure is None and letters:
                        self.on_dead_lettered(size)
                    elif failure is None:
                        self.on_exported(size, now - since)
                    else:
                        self.on_export_failed(
                            EXITED if failure == EXITED
                            else RETURNED if returned else RAISED, now - since)
            case DrainDone(None):  # a failed drain's messages go to send_batch (or are lost)
                self.on_drained(self._draining)
        for effect in effects:
            match effect:
                case StartExport(export_id, batch, retry_num):
                    self._exports[export_id] = (len(batch), now, isinstance(batch, DeadLetters))
                    if retry_num:
                        self.on_retry()
                case KillExport(export_id):
                    if (started := self._exports.pop(export_id, None)) is not None:
                        self.on_export_failed(KILLED, now - started[1])
                case Drain(messages):
                    self._draining = len(messages)
                case Lose(count, _):
                    self.on_lost(count)
                case Reply(_, Granted(count=0, refused=Overloaded() as refused)):
                    self.on_refused(1, TERMINATING if refused.terminating else QUEUE_FULL)

    def stats(self) -> Stats:
        queue_length, batch_length, queue_bytes = self._gauges()
        return Stats(**{**self._counts, "queue_length": queue_length,
                        "batch_length": batch_length, "queue_bytes": queue_bytes})

    def on_accepted(self, count: int) -> None:
        self._counts["accepted"] += count
        if self._otel:
            self._otel.accepted.add(count, self._attributes)

    def on_refused(self, count: int, reason: str) -> None:
        if count:
            self._counts[f"refused_{reason}"] += count
            if self._otel:
                self._otel.processed.add(
                    count, {**self._attributes, "error.type": REFUSED_ERROR_TYPES[reason]})

    def on_exported(self, count: int, seconds: float) -> None:
        self._counts["exported"] += count
        self._counts["batches_exported"] += 1
        if self._otel:
            self._otel.processed.add(count, self._attributes)
            self._otel.batches.add(1, self._attributes)
            self._otel.duration.record(seconds, self._attributes)

    def on_export_failed(self, reason: str, seconds: float) -> None:
        self._counts[f"failures_{reason}"] += 1
        if self._otel:
            attributes = {**self._attributes, "error.type": reason}
            self._otel.failures.add(1, attributes)
            self._otel.duration.record(seconds, attributes)

    def on_retry(self) -> None:
        self._counts["retries"] += 1
        if self._otel:
            self._otel.retries.add(1, self._attributes)

    def on_dead_lettered(self, count: int) -> None:
        self._counts["dead_lettered"] += count
        if self._otel:
            self._otel.dead_lettered.add(count, self._attributes)

    def on_drained(self, count: int) -> None:
        self._counts["drained"] += count
        if self._otel:
            self._otel.drained.add(count, self._attributes)

    def on_lost(self, count: int) -> None:
        self._counts["lost"] += count
        if self._otel:
            self._otel.lost.add(count, self._attributes)


def _reason(refused: Overloaded | MessageTooLarge) -> str:
    if isinstance(refused, MessageTooLarge):
        return TOO_LARGE
    return TERMINATING if refused.terminating else QUEUE_FULL


class _Instruments:
    """The OpenTelemetry instruments of one server (only built when the API is installed)."""

    def __init__(self, server: str, meter_provider: Callable[[], Any] | None,
                 gauges: Callable[[], tuple[int, int, int]], capacity: int) -> None:
        provider = meter_provider() if meter_provider is not None else otel.get_meter_provider()
        meter = provider.get_meter("pachka_actors")
        attributes = {"pachka.server": server}
        self.accepted = meter.create_counter(
            "pachka.messages.accepted", "{message}", "Messages queued by the server")
        self.processed = meter.create_counter(
            "pachka.messages.processed", "{message}",
            "Messages the sink took; with error.type, messages refused as overloaded")
        self.batches = meter.create_counter(
            "pachka.batches.exported", "{batch}", "Batches the sink took")
        self.failures = meter.create_counter(
            "pachka.export.failures", "{batch}", "Failed exports, by error.type")
        self.retries = meter.create_counter(
            "pachka.export.retries", "{batch}", "Exports retried after a failure")
        self.drained = meter.create_counter(
            "pachka.messages.drained", "{message}",
            "Messages drain_on_terminate took (it returned)")
        self.dead_lettered = meter.create_counter(
            "pachka.messages.dead_lettered", "{message}",
            "Messages that failed on their own, handed to Sink.dead_letter")
        self.lost = meter.create_counter(
            "pachka.messages.lost", "{message}",
            "Accepted messages given up at shutdown_timeout, with no spill_path or journal")
        self.duration = meter.create_histogram(
            "pachka.export.duration", "s", "Time from handing a batch to an exporter to its "
                                           "result")

        def observe(index: int) -> Callable[[Any], Iterable[Any]]:
            def callback(options: Any) -> Iterable[Any]:
                return [otel.Observation(gauges()[index], attributes)]
            return callback

        def observe_capacity(options: Any) -> Iterable[Any]:
            return [otel.Observation(capacity, attributes)]

        # Up-down counters, as the conventions make queue sizes: a sum over servers means
        # something (messages held by all of them), unlike a sum of gauges.
        meter.create_observable_up_down_counter(
            "pachka.queue.size", [observe(0)], "{message}",
            "Messages queued, not counting the batch in flight")
        meter.create_observable_up_down_counter(
            "pachka.queue.capacity", [observe_capacity], "{message}",
            "critical_queue_size: the queue (with room granted to lingering handles) "
            "refuses messages beyond it")
        meter.create_observable_up_down_counter(
            "pachka.batch.size", [observe(1)], "{message}",
            "Messages of the batch in flight or waiting for a retry")
