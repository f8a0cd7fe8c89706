"""Sinks that leave evidence: every delivered batch is logged so a run can be checked.

A sink runs in a fresh exporter process per batch, so it cannot count in memory:
it appends one line per batch to a file (first index, length, whether the batch
was contiguous). `verify` then proves that messages 0..n-1 arrived exactly once,
in order, in batches no larger than the limit. Messages are `prefix + str(i)`
(or plain ints with an empty prefix), which makes a batch checkable in one compare.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from pachka_actors import Sink

from ._harness import BenchmarkError


def make_messages(start: int, stop: int, prefix: str = "") -> list[Any]:
    """Messages `start..stop-1`: ints, or strings like "Post 7" with `prefix` "Post "."""
    if not prefix:
        return list(range(start, stop))
    return [f"{prefix}{i}" for i in range(start, stop)]


def first_index(message: Any, prefix: str) -> int:
    return int(message) if not prefix else int(str(message)[len(prefix):])


class RecordingSink(Sink):
    """A trivial sink that only logs what it got; the "trivial sink" of goals 2 to 6."""

    def __init__(self, log_path: str, prefix: str = "") -> None:
        self.log_path = log_path
        self.prefix = prefix

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        self.record(messages)

    def record(self, messages: list[Any]) -> None:
        first = first_index(messages[0], self.prefix) if messages else 0
        ok = messages == make_messages(first, first + len(messages), self.prefix)
        with open(self.log_path, "a") as log:
            log.write(f"{first} {len(messages)} {int(ok)}\n")


class HangOnceSink(RecordingSink):
    """Hangs in its first `send_batch` (until killed), succeeds on the retry.

    Each attempt appends "pid monotonic-start" to `attempts_path` first, so the
    benchmark knows which process to watch and when `send_batch` began.
    """

    def __init__(self, log_path: str, attempts_path: str) -> None:
        super().__init__(log_path)
        self.attempts_path = attempts_path

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        started = time.monotonic()
        first = not os.path.exists(self.attempts_path)
        with open(self.attempts_path, "a") as attempts:
            attempts.write(f"{os.getpid()} {started}\n")
        if first:
            time.sleep(3600)  # hung: only the export timeout's SIGKILL ends this
        self.record(messages)

    def retry_timeout(self, retry_num: int, failure_reason: Any, server_value: Any) -> float:
        return 0.0


class BlockFirstSink(RecordingSink):
    """Blocks its first batch until `release_path` exists, so that the server's queue fills.

    Writes its parent's pid (the server actor's process) to `started_path` first.
    """

    def __init__(self, log_path: str, started_path: str, release_path: str,
                 prefix: str = "") -> None:
        super().__init__(log_path, prefix)
        self.started_path = started_path
        self.release_path = release_path

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        if not os.path.exists(self.started_path):
            with open(self.started_path + ".tmp", "w") as f:
                f.write(str(os.getppid()))
            os.replace(self.started_path + ".tmp", self.started_path)
            deadline = time.monotonic() + 600
            while not os.path.exists(self.release_path) and time.monotonic() < deadline:
                time.sleep(0.005)
        self.record(messages)


@dataclass(frozen=True)
class Delivery:
    messages: int
    batches: int
    largest_batch: int


def _lines(log_path: str) -> list[str]:
    """The complete lines a `RecordingSink` has logged so far (one per batch)."""
    try:
        with open(log_path) as f:
            return f.read().split("\n")[:-1]
    except FileNotFoundError:
        return []


def delivered(log_path: str) -> int:
    """Messages the sink has logged so far (one line per batch: first, length, ok)."""
    return sum(int(line.split()[1]) for line in _lines(log_path))


def verify(log_path: str, expected: int, max_batch_size: int) -> Delivery:
    """Check the sink's log: 0..expected-1 exactly once, in order, batches within the limit."""
    lines = _lines(log_path)
    following, largest = 0, 0
    for number, line in enumerate(lines):
        first, length, ok = (int(field) for field in line.split())
        if first != following or not ok:
            raise BenchmarkError(f"batch {number} starts at message {first} (expected "
                                 f"{following}) or is not in order: lost, duplicated or "
                                 f"reordered messages")
        if length > max_batch_size:
            raise BenchmarkError(f"batch {number} has {length} messages > {max_batch_size}")
        following += length
        largest = max(largest, length)
    if following != expected:
        raise BenchmarkError(f"{following} messages delivered, {expected} expected")
    return Delivery(following, len(lines), largest)


class ListingSink(Sink):
    """Logs every message of every batch (one line per batch): for producers that interleave,
    whose batches a first index cannot describe (`verify_interleaved`)."""

    def __init__(self, log_path: str) -> None:
        self.log_path = log_path

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        with open(self.log_path, "a") as log:
            log.write(" ".join(map(str, messages)) + "\n")


def verify_interleaved(log_path: str, producers: int, each: int, max_batch_size: int) -> None:
    """Check a `ListingSink`'s log: producer p sent p*each .. (p+1)*each-1; every message
    came exactly once, each producer's in its order, batches within the limit."""
    following = [p * each for p in range(producers)]
    for number, line in enumerate(_lines(log_path)):
        batch = [int(field) for field in line.split()]
        if len(batch) > max_batch_size:
            raise BenchmarkError(f"batch {number} has {len(batch)} messages > {max_batch_size}")
        for message in batch:
            p = message // each
            if not 0 <= p < producers or message != following[p]:
                raise BenchmarkError(f"batch {number}: message {message} out of order, lost "
                                     f"or duplicated")
            following[p] += 1
    if following != [(p + 1) * each for p in range(producers)]:
        raise BenchmarkError(f"not all delivered: producers reached {following}")
