"""pachka_actors.testing: the helpers users test their sinks and producers with."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from thespian.actors import ActorSystem

from pachka_actors import ConfigError, Sink
from pachka_actors.errors import PermanentSinkError
from pachka_actors.messages import State
from pachka_actors.sink import retry_delay
from pachka_actors.testing import (
    RecordingSink,
    _claim,
    fire,
    run_sink,
    start_manual,
    wait_for_state,
    wait_for_timer,
)


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
    assert report.delivered == [["a", "b"]]
    # As a server, which holds the batches behind one that fails (Pachka keeps order).
    assert report.given_up == [["bad", "c"], ["d"]]
    assert [(a.batch, a.retry_num, a.retry_delay) for a in report.failures] == [
        (["bad", "c"], 0, 2.0), (["bad", "c"], 1, 4.0), (["bad", "c"], 2, 6.0)]
    assert all(isinstance(a.failure, ValueError) for a in report.failures)
    assert report.messages == ["a", "b"]


class PoisonSink(Sink):
    """Says only "this batch has bad data" when a batch holds a negative number."""

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        if any(m < 0 for m in messages):
            raise PermanentSinkError("a negative number")


def test_run_sink_isolates_bad_messages_as_a_server_does() -> None:
    report = run_sink(PoisonSink, [1, 2, -3, 4, 5, 6, -7, 8], max_batch_size=4)
    assert report.messages == [1, 2, 4, 5, 6, 8]   # in order, each once
    assert report.dead_lettered == [[-3], [-7]]
    assert report.given_up == []


class Answers(Sink):
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def retry_timeout(self, retry_num: int, failure_reason: Any, server_value: Any) -> float:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer  # type: ignore[no-any-return]


@pytest.mark.parametrize(("answer", "delay"), [
    (0.5, 0.5), (timedelta(seconds=2), 2.0), (0, 0.0),
    (-1, 3.0), ("soon", 3.0), (True, 3.0), (None, 3.0), (RuntimeError("no"), 3.0),
])
def test_retry_delay_falls_back_to_pachkas_default(answer: Any, delay: float) -> None:
    """A `retry_timeout` that raises or answers no duration gets `Sink.retry_timeout`'s."""
    assert retry_delay(Answers(answer), 3, "exited", None) == delay


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


def test_recording_sink_readers_never_see_a_batch_being_written(tmp_path: Path) -> None:
    """An exporter that claimed a batch number and has not written it yet (another process,
    caught between the two steps): readers see no batch, not an empty file."""
    sink = RecordingSink(tmp_path)
    assert _claim(tmp_path, "batch") == 0  # claimed, not written
    assert sink.batches() == [] and sink.messages() == []
    assert sink.send_batch(["x"], None) is None
    assert sink.batches() == [["x"]]  # under the next number; the claimed one stays unseen


@pytest.mark.parametrize("pachka_system", ["simpleSystemBase", "multiprocTCPBase"],
                         indirect=True)
def test_manual_server_with_recording_sink(pachka_system: ActorSystem, tmp_path: Path) -> None:
    sink = RecordingSink(tmp_path, fail_first=1)
    server = start_manual(pachka_system, sink, max_batch_size=10, linger=None)
    server.send_messages(["x", "y"])
    fire(server, "batch")
    assert wait_for_state(server, State.RETRY_BACKOFF).retry_num == 1
    with pytest.raises(AssertionError, match=r"no batch timer runs \(state: retry_backoff"):
        fire(server, "batch")
    fire(server, "retry")
    server.stop()
    assert sink.messages() == ["x", "y"]


# [start:wait] shown in docs/testing.md
@pytest.mark.parametrize("pachka_system",
                         ["simpleSystemBase", "multiprocQueueBase", "multiprocTCPBase"],
                         indirect=True)
def test_fire_waits_for_a_timer_armed_later(pachka_system: ActorSystem, tmp_path: Path) -> None:
    sink = RecordingSink(tmp_path, fail_first=2)
    server = start_manual(pachka_system, sink, max_batch_size=10, linger=None)
    server.send_messages(["x", "y"])
    fire(server, "batch")
    fire(server, "retry", wait=5.0)    # armed once the export's failure reached the server
    fire(server, "retry", wait=5.0)
    server.stop()
    assert sink.messages() == ["x", "y"] and sink.attempts() == 3
# [end:wait]


@pytest.mark.parametrize("pachka_system", ["simpleSystemBase", "multiprocTCPBase"],
                         indirect=True)
def test_waiting_in_vain_names_what_was_seen(pachka_system: ActorSystem, tmp_path: Path) -> None:
    server = start_manual(pachka_system, RecordingSink(tmp_path), linger=None)
    with pytest.raises(AssertionError, match=r"^no retry timer runs after 0.2 s "
                                             r"\(state: idle, running timer: None\)$"):
        wait_for_timer(server, "retry", timeout=0.2)
    with pytest.raises(AssertionError, match=r"^the server is not exporting after 0.2 s "
                                             r"\(state: idle"):
        wait_for_state(server, "exporting", timeout=0.2)
    server.send_messages(["x"])
    timer = wait_for_timer(server, "batch", timeout=0)
    assert server.status().timer == timer
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
