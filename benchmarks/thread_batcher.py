"""Goal 4: a hand-written batcher in one process (OpenTelemetry's BatchProcessor design).

A worker thread waits on a condition and wakes when `max_batch_size` items are
queued or `schedule_delay` has passed, then exports a batch outside the lock.
Unlike OpenTelemetry, which drops items when its queue is full, `add` blocks,
so that no message is lost and the run can be checked like the others. The
export is the same trivial sink, called directly.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ._harness import DEFAULT_BATCH, Row, Sizes, median, repeat, scratch_dir
from ._sinks import RecordingSink, verify

MAX_QUEUE_SIZE = 10_000  # pachka_actors' default critical_queue_size


class ThreadBatcher:
    """Queue in a deque; one worker thread exports batches of at most `max_batch_size`."""

    def __init__(self, export: Callable[[list[Any]], None], max_batch_size: int = DEFAULT_BATCH,
                 max_queue_size: int = MAX_QUEUE_SIZE, schedule_delay: float = 5.0) -> None:
        self._export = export
        self._max_batch_size = max_batch_size
        self._max_queue_size = max_queue_size
        self._delay = schedule_delay
        self._queue: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._worker = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._worker.start()

    def add(self, item: Any) -> None:
        with self._cond:
            while len(self._queue) >= self._max_queue_size:
                self._cond.wait()
            self._queue.append(item)
            if len(self._queue) >= self._max_batch_size:
                self._cond.notify_all()

    def shutdown(self) -> None:
        """Export everything queued, then stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._worker.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                deadline = time.monotonic() + self._delay
                while (len(self._queue) < self._max_batch_size and not self._closing
                       and (left := deadline - time.monotonic()) > 0):
                    self._cond.wait(left)
                if not self._queue and self._closing:
                    return
                size = min(self._max_batch_size, len(self._queue))
                batch = [self._queue.popleft() for _ in range(size)]
                self._cond.notify_all()  # room for blocked producers
            if batch:
                self._export(batch)


def batcher_seconds(log: str, messages: int) -> float:
    """Seconds from the first `add` until everything is exported and the worker has ended."""
    sink = RecordingSink(log)
    start = time.perf_counter()
    batcher = ThreadBatcher(sink.record)
    for i in range(messages):
        batcher.add(i)
    batcher.shutdown()
    elapsed = time.perf_counter() - start
    verify(log, messages, DEFAULT_BATCH)
    return elapsed


def run(sizes: Sizes, pachka_rate: float) -> list[Row]:
    """Compares `pachka_rate` (goal 2's bulk ingest, msg/s) with the batcher's."""
    n = sizes.batcher_messages
    with scratch_dir() as tmp:
        logs = iter(os.path.join(tmp, f"batcher-{i}.log") for i in range(10**9))
        rate = n / median(repeat(sizes.reps, lambda: batcher_seconds(next(logs), n)))
    return [Row(4, "bulk ingest vs thread+deque batcher (msg/s)", pachka_rate, "msg/s",
                "thread batcher, add() per msg", rate, pachka_rate / rate, ">= 1x",
                pachka_rate / rate >= 1, f"batcher: {n:,} msgs, batch {DEFAULT_BATCH}",
                (("thread+deque batcher, 1 process", rate),
                 ("pachka_actors bulk ingest, 2 processes", pachka_rate)))]
