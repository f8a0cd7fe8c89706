"""Metrics: plain Stats always; OpenTelemetry instruments reach the application's SDK."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sinks import wait_for
from support import fire
from thespian.actors import ActorSystem

from pachka_actors import Pachka, Sink
from pachka_actors.messages import GetStats, State, TimerKind
from pachka_actors.metrics import QUEUE_FULL, Metrics, Stats
from pachka_actors.sink import KILLED

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


def exported_points(directory: Path) -> list[dict[str, Any]]:
    found = []
    for path in directory.glob("*.jsonl"):
        found += [json.loads(line) for line in path.read_text().splitlines() if line]
    return found


@pytest.mark.multiproc
def test_an_sdk_configured_before_the_actor_system_gets_the_servers_metrics(
        tmp_path: Path) -> None:
    """The default: the server's forked process inherits the application's global provider."""
    tests = Path(__file__).parent
    app = subprocess.Popen([sys.executable, str(tests / "otel_app.py"), str(tmp_path)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": str(tests)})
    assert app.stdin is not None and app.stdout is not None
    try:
        assert app.stdout.readline() == "sent\n"

        def accepted() -> float:
            return max((p["value"] for p in exported_points(tmp_path)
                        if p["name"] == "pachka.messages.accepted"
                        and p["attributes"] == {"pachka.server": "otel-app"}), default=0)

        wait_for(lambda: accepted() == 25)
        app.stdin.write("\n")
        app.stdin.flush()
        assert app.wait(30) == 0
    finally:
        app.kill()
    points = exported_points(tmp_path)
    assert {p["name"] for p in points} >= {"pachka.messages.accepted", "pachka.queue.length",
                                           "pachka.export.duration"}
    assert all(int(path.stem) != app.pid for path in tmp_path.glob("*.jsonl") if path.stat().st_size
               and any(p["name"] == "pachka.messages.accepted" for p in
                       map(json.loads, path.read_text().splitlines())))  # from the server


class FailingOnce(Sink):
    def __init__(self) -> None:
        self.failed = False

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("database down")

    def retry_timeout(self, retry_num: int, failure_reason: Any, server_value: Any) -> float:
        return 0.0


def test_stats_and_the_failure_log(simple_system: ActorSystem,
                                   caplog: pytest.LogCaptureFixture) -> None:
    server = Pachka.start(system=simple_system, sink=FailingOnce(), name="logged",
                          max_batch_size=2, critical_queue_size=3, timers="manual")
    with caplog.at_level(logging.WARNING, logger="pachka_actors"):
        assert server.send_messages(["a", "b", "c", "d"]) == 3
        wait_for(lambda: server.status().state is State.RETRY_BACKOFF)
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in caplog.records]
    text = failures[0].getMessage()
    assert text.startswith("Pachka logged: export of 2 messages failed (RuntimeError: "
                           "database down); retry 1 in 0 s")
    assert "Traceback (most recent call last)" in text and "send_batch" in text
    fire(simple_system, server, TimerKind.RETRY)
    stats = simple_system.ask(server.address, GetStats(), 5)
    assert stats == Stats(accepted=3, refused_queue_full=1, exported=2, batches_exported=1,
                          failures_raised=1, retries=1, queue_length=1, batch_length=0)
    server.stop()
