"""pachka_actors.testing: the helpers users test their sinks and producers with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sinks import wait_for
from thespian.actors import ActorSystem

from pachka_actors import ConfigError, Sink
from pachka_actors.messages import State
from pachka_actors.testing import RecordingSink, fire, run_sink, start_manual


class FlakySink(Sink):
    """Fails every batch that contains a message it dislikes; backs off 2 s per retry."""

    def send_batch(self, messages: list[Any], server_value: Any) -> BaseException | None:
        if "bad" in messages:
            return ValueError(f"bad message for {server_value}")
        return None

    def retry_timeout(self, retry_num: int, failure_reason: Any, server_value: Any) -> float:
        return 2.0 * retry_num


def test_run_sink_batches_retries_and_reports() -> None:
    report = run_sink(FlakySink, ["a", "b", "bad", "c", "d"], max_batch_size=2,
                      server_value="sv", max_retries=2)
    assert report.delivered == [["a", "b"], ["d"]]
    assert report.given_up == [["bad", "c"]]
    assert [(a.batch, a.retry_num, a.retry_delay) for a in report.failures] == [
        (["bad", "c"], 0, 2.0), (["bad", "c"], 1, 4.0), (["bad", "c"], 2, 6.0)]
    assert all(isinstance(a.failure, ValueError) for a in report.failures)
    assert report.messages == ["a", "b", "d"]


def test_run_sink_refuses_a_sink_that_cannot_cross_processes() -> None:
    class Local(Sink):  # not importable from another process
        def send_batch(self, messages: list[Any], server_value: Any) -> None:
            pass

    with pytest.raises(ConfigError) as error:
        run_sink(Local, [1])
    assert error.value.option == "sink"


def test_recording_sink_fails_first_attempts(tmp_path: Path) -> None:
    sink = RecordingSink(tmp_path, fail_first=1)
    report = run_sink(sink, [1, 2, 3], max_batch_size=2)
    assert report.delivered == [[1, 2], [3]] and len(report.failures) == 1
    assert sink.batches() == [[1, 2], [3]] and sink.attempts() == 3


@pytest.mark.parametrize("pachka_system", ["simpleSystemBase", "multiprocTCPBase"],
                         indirect=True)
def test_manual_server_with_recording_sink(pachka_system: ActorSystem, tmp_path: Path) -> None:
    sink = RecordingSink(tmp_path, fail_first=1)
    server = start_manual(pachka_system, sink, max_batch_size=10, linger=None)
    server.send_messages(["x", "y"])
    fire(server, "batch")
    wait_for(lambda: server.status().state is State.RETRY_BACKOFF)
    with pytest.raises(AssertionError, match="no batch timer"):
        fire(server, "batch")
    fire(server, "retry")
    wait_for(lambda: sink.messages() == ["x", "y"])
    server.stop()


# [start:fixture] shown in docs/testing.md
@pytest.mark.parametrize("pachka_system", ["simpleSystemBase", "multiprocTCPBase"],
                         indirect=True)
def test_batches_reach_the_sink(pachka_system: ActorSystem, tmp_path: Path) -> None:
    sink = RecordingSink(tmp_path)
    server = start_manual(pachka_system, sink, max_batch_size=10, linger=None)
    server.send_messages(["x", "y"])
    fire(server, "batch")
    server.stop()                      # returns once everything accepted is delivered
    assert sink.messages() == ["x", "y"]
# [end:fixture]
