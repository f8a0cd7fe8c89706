"""What counting costs the server per message: `python -m benchmarks.metrics_overhead`.

The worst case for metrics is one event per message (`SendMessage`, no lists):
the server's core step, with and without `Metrics.record`, timed in one process
for the same stream of single messages and full batches; with the OpenTelemetry
API and no SDK (what a library user gets by default), and with the SDK and an
in-memory reader. The figure to hold: the API without SDK adds under 1%.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

from pachka_actors.core import ExportDone, MessagesReceived, PachkaCore, StartExport
from pachka_actors.metrics import Metrics

MESSAGES = 200_000
BATCH = 500


def run(metrics: Metrics | None, chunk: int = 1) -> float:
    """Seconds per message for `MESSAGES` messages arriving `chunk` at a time (1: one
    `SendMessage` each; 1000: what a lingering handle ships) through a core."""
    core = PachkaCore(max_batch_size=BATCH, critical_queue_size=10 * BATCH, max_batch_delay=None,
                      export_timeout=None, credit_timeout=None, shutdown_timeout=None,
                      drains=False)
    started = time.perf_counter()
    for i in range(0, MESSAGES, chunk):
        event: Any = MessagesReceived(tuple(range(i, i + chunk)))
        effects = core.handle(event)
        if metrics is not None:
            metrics.record(event, effects, 0.0)
        for effect in effects:
            if isinstance(effect, StartExport):
                finished = ExportDone(effect.export_id)
                done = core.handle(finished)
                if metrics is not None:
                    metrics.record(finished, done, 0.0)
    return (time.perf_counter() - started) / MESSAGES


def sdk_provider() -> Any:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    return MeterProvider(metric_readers=[InMemoryMetricReader()])


def median_of(reps: int, once: Callable[[], float]) -> float:
    return statistics.median(once() for _ in range(reps))


def main() -> None:
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"{MESSAGES:,} messages, batch {BATCH}, median of 5, load {load}")
    for chunk in (1, 1000):
        contenders: dict[str, Callable[[], float]] = {
            "core alone": functools.partial(run, None, chunk),
            "core + Metrics, OpenTelemetry API, no SDK":
                lambda chunk=chunk: run(Metrics("b"), chunk),  # type: ignore[misc]
            "core + Metrics, OpenTelemetry SDK":
                lambda chunk=chunk: run(Metrics("b", sdk_provider), chunk),  # type: ignore[misc]
        }
        figures = {name: median_of(5, once) for name, once in contenders.items()}
        base = figures["core alone"]
        print(f" messages arriving {chunk} at a time:")
        for name, seconds in figures.items():
            print(f"  {name:45s} {seconds * 1e6:6.3f} us/msg  (+{(seconds - base) * 1e6:.3f} "
                  f"us, {(seconds / base - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
