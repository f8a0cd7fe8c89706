"""An application that configures the OpenTelemetry SDK before `ActorSystem()`, as docs advise.

Run as a script with a directory: metrics exported from the (forked) server process are
written there as JSON lines, one file per exporting process.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)


class JsonLinesExporter(MetricExporter):
    """Appends every data point as a JSON line to `<directory>/<pid>.jsonl`."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = directory

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs: Any) -> MetricExportResult:
        with open(os.path.join(self.directory, f"{os.getpid()}.jsonl"), "a") as out:
            for point in points(metrics_data):
                out.write(json.dumps(point) + "\n")
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def points(data: MetricsData) -> Iterator[dict[str, Any]]:
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", getattr(point, "count", None))
                    yield {"name": metric.name, "attributes": dict(point.attributes or {}),
                           "value": value}


def main(directory: str) -> None:
    from thespian.actors import ActorSystem  # noqa: F401 - imported after the SDK on purpose

    from pachka_actors import Pachka
    from pachka_actors.systems import isolated_system
    from pachka_actors.testing import RecordingSink

    reader = PeriodicExportingMetricReader(JsonLinesExporter(directory),
                                           export_interval_millis=50)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    with isolated_system("multiprocTCPBase") as asys:
        server = Pachka.start(system=asys, sink=RecordingSink(os.path.join(directory, "sink")),
                              name="otel-app", max_batch_size=10, linger=None)
        assert server.send_messages(list(range(25))) == 25
        print("sent", flush=True)
        sys.stdin.readline()  # the test has seen the metrics arrive
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1])
