"""Metrics: plain Stats always; OpenTelemetry instruments reach the application's SDK."""

from __future__ import annotations

from typing import Any

import pytest

from pachka_actors.metrics import KILLED, QUEUE_FULL, Metrics, Stats

sdk_metrics = pytest.importorskip("opentelemetry.sdk.metrics")
sdk_export = pytest.importorskip("opentelemetry.sdk.metrics.export")


def points(reader: Any) -> dict[tuple[str, tuple[tuple[str, Any], ...]], float]:
    """name and attributes -> value (sum, gauge value or histogram count)."""
    found = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    found[metric.name, tuple(sorted(point.attributes.items()))] = \
                        point.count if value is None else value
    return found


def test_counters_reach_plain_stats_and_the_sdk() -> None:
    reader = sdk_export.InMemoryMetricReader()
    provider = sdk_metrics.MeterProvider(metric_readers=[reader])
    queue = [7, 3]
    metrics = Metrics("events", lambda: provider, lambda: (queue[0], queue[1]))
    metrics.on_accepted(10)
    metrics.on_accepted(0)
    metrics.on_refused(2, QUEUE_FULL)
    metrics.on_exported(3, 0.01)
    metrics.on_export_failed(KILLED, 1.0)
    metrics.on_retry()
    metrics.on_drained(4)
    assert metrics.stats() == Stats(accepted=10, refused_queue_full=2, exported=3,
                                    batches_exported=1, failures_killed=1, retries=1,
                                    drained=4, queue_length=7, batch_length=3)
    server = ("pachka.server", "events")
    found = points(reader)
    assert found["pachka.messages.accepted", (server,)] == 10
    assert found["pachka.messages.refused", (server, ("reason", "queue_full"))] == 2
    assert found["pachka.messages.exported", (server,)] == 3
    assert found["pachka.export.failures", (server, ("reason", "killed"))] == 1
    assert found["pachka.export.duration", (server,)] == 1  # one successful export timed
    assert found["pachka.queue.length", (server,)] == 7
    assert found["pachka.batch.size", (server,)] == 3
