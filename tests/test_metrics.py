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
from sinks import RecordingSink, wait_for
from support import fire
from thespian.actors import ActorSystem

from pachka_actors import Pachka, Sink
from pachka_actors.messages import GetStats, State, TimerKind
from pachka_actors.metrics import QUEUE_FULL, TERMINATING, Metrics, Stats
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
    metrics = Metrics("events", lambda: provider, lambda: (queue[0], queue[1], 0), capacity=50)
    metrics.on_accepted(10)
    metrics.on_accepted(0)
    metrics.on_refused(2, QUEUE_FULL)
    metrics.on_refused(5, TERMINATING)
    metrics.on_exported(3, 0.01)
    metrics.on_export_failed(KILLED, 1.0)
    metrics.on_retry()
    metrics.on_drained(4)
    assert metrics.stats() == Stats(accepted=10, refused_queue_full=2, refused_terminating=5,
                                    exported=3, batches_exported=1, failures_killed=1,
                                    retries=1, drained=4, queue_length=7, batch_length=3)
    server = ("pachka.server", "events")
    found = points(reader)
    assert found["pachka.messages.accepted", (server,)] == 10
    # As the conventions' otel.sdk.processor.<signal>.processed: no error.type for what
    # the sink took, the prescribed values for refusals.
    assert found["pachka.messages.processed", (server,)] == 3
    assert found["pachka.messages.processed", (("error.type", "queue_full"), server)] == 2
    assert found["pachka.messages.processed", (("error.type", "already_shutdown"), server)] == 5
    assert found["pachka.export.failures", (("error.type", "killed"), server)] == 1
    assert found["pachka.export.duration", (server,)] == 1  # one successful export timed
    assert found["pachka.export.duration", (("error.type", "killed"), server)] == 1
    assert found["pachka.queue.size", (server,)] == 7
    assert found["pachka.queue.capacity", (server,)] == 50
    assert found["pachka.batch.size", (server,)] == 3
    assert {name for name, _ in found} == {
        "pachka.messages.accepted", "pachka.messages.processed", "pachka.batches.exported",
        "pachka.export.failures", "pachka.export.retries", "pachka.messages.drained",
        "pachka.export.duration", "pachka.queue.size", "pachka.queue.capacity",
        "pachka.batch.size"}


def test_instrument_kinds_follow_the_conventions() -> None:
    """Queue sizes and capacity are up-down counters (they add up over servers), processed
    a monotonic counter, as otel.sdk.processor.<signal>.queue.size/.queue.capacity/.processed."""
    reader = sdk_export.InMemoryMetricReader()
    provider = sdk_metrics.MeterProvider(metric_readers=[reader])
    metrics = Metrics("events", lambda: provider, lambda: (1, 1, 0), capacity=2)
    metrics.on_exported(1, 0.01)
    kinds = {metric.name: (type(metric.data).__name__, getattr(metric.data, "is_monotonic", None))
             for resource in reader.get_metrics_data().resource_metrics
             for scope in resource.scope_metrics for metric in scope.metrics}
    assert kinds["pachka.queue.size"] == kinds["pachka.queue.capacity"] \
        == kinds["pachka.batch.size"] == ("Sum", False)
    assert kinds["pachka.messages.processed"] == ("Sum", True)


#: The provider of the server below: module-level, as the `meter_provider` option wants.
SERVER_READER = sdk_export.InMemoryMetricReader()
SERVER_PROVIDER = sdk_metrics.MeterProvider(metric_readers=[SERVER_READER])


def server_provider() -> Any:
    return SERVER_PROVIDER


def test_a_server_reports_its_capacity_and_refusals(simple_system: ActorSystem,
                                                    tmp_path: Path) -> None:
    server = Pachka.start(system=simple_system, sink=RecordingSink(tmp_path), name="capacity",
                          max_batch_size=10, critical_queue_size=3, timers="manual",
                          meter_provider=server_provider)
    assert server.send_messages(["a", "b", "c", "d"]) == 3
    server.stop()
    found = points(SERVER_READER)
    name = ("pachka.server", "capacity")
    assert found["pachka.queue.capacity", (name,)] == 3
    assert found["pachka.messages.processed", (("error.type", "queue_full"), name)] == 1
    assert found["pachka.messages.processed", (name,)] \
        + found.get(("pachka.messages.drained", (name,)), 0) == 3


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
    assert {p["name"] for p in points} >= {"pachka.messages.accepted", "pachka.queue.size",
                                           "pachka.queue.capacity", "pachka.export.duration"}
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


class FailingTwice(FailingOnce):
    def __init__(self) -> None:
        self.failures = 0

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        self.failures += 1
        if self.failures <= 2:
            raise RuntimeError("database down")


def test_a_batch_logs_its_traceback_with_its_first_failure_only(
        simple_system: ActorSystem, caplog: pytest.LogCaptureFixture) -> None:
    server = Pachka.start(system=simple_system, sink=FailingTwice(), name="logged",
                          max_batch_size=2, timers="manual")
    with caplog.at_level(logging.WARNING, logger="pachka_actors"):
        server.send_messages(["a", "b"])
        wait_for(lambda: server.status().state is State.RETRY_BACKOFF)
        fire(simple_system, server, TimerKind.RETRY)
        wait_for(lambda: server.status().retry_num == 2)
    first, second = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert "retry 1 in" in first and "Traceback (most recent call last)" in first
    assert second.endswith("(RuntimeError: database down); retry 2 in 0 s"), second
    fire(simple_system, server, TimerKind.RETRY)  # the third try delivers
    server.stop()
