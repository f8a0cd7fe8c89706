"""What every benchmark shares: sizes, timing, result rows, actor systems and /proc readings.

Kept in one place so that each goal's module holds only its own comparison.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from thespian.actors import Actor, ActorAddress, ActorSystem

from pachka_actors.config import PachkaConfig
from pachka_actors.systems import isolated_system

#: The library's default max_batch_size (500), used wherever the issue names no other.
DEFAULT_BATCH: int = PachkaConfig.max_batch_size


#: The throughput settings docs/options.md documents, measured by goals 1 (SQLite) and 7
#: (G2): one exporter process for every batch (no process per batch), credits for
#: 20,000 messages per round trip, and a queue that holds a whole run (nothing refused).
THROUGHPUT: dict[str, Any] = {"batches_per_exporter": None, "buffer_size": 20_000,
                              "critical_queue_size": 100_000}


def describe(options: dict[str, Any]) -> str:
    """Options as the tables show them: `buffer_size=20,000, batches_per_exporter=None`."""
    return ", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}"
                     for k, v in options.items())


class BenchmarkError(Exception):
    """A run that lost, duplicated or reordered messages: its timing must not count."""


@dataclass(frozen=True)
class Sizes:
    """How much work each benchmark does; `QUICK` is for CI smoke runs, `FULL` for figures."""

    reps: int
    sqlite_messages: int
    sqlite_batch: int
    ingest_messages: int
    ingest_chunk: int
    ask_calls: int
    overhead_messages: int
    batcher_messages: int
    export_timeout: float
    timeout_reps: int
    memory_queue: int
    overload_rounds: int
    anchor_messages: int
    pool_messages: int = 20_000
    pool_work_us: float = 200.0
    producer_messages: int = 100_000
    producer_before: int = 10_000


FULL = Sizes(reps=5, sqlite_messages=10_000, sqlite_batch=500, ingest_messages=100_000,
             ingest_chunk=1_000, ask_calls=2_000, overhead_messages=20_000,
             batcher_messages=200_000, export_timeout=0.2, timeout_reps=5,
             memory_queue=100_000, overload_rounds=100, anchor_messages=100_000)
QUICK = Sizes(reps=1, sqlite_messages=1_000, sqlite_batch=500, ingest_messages=5_000,
              ingest_chunk=1_000, ask_calls=200, overhead_messages=2_000,
              batcher_messages=20_000, export_timeout=0.1, timeout_reps=1,
              memory_queue=5_000, overload_rounds=5, anchor_messages=5_000,
              pool_messages=2_000, producer_messages=5_000, producer_before=1_000)


@dataclass(frozen=True)
class Row:
    """One line of the results table: a figure, its baseline and the goal they are held to.

    `ratio` is `figure / baseline` unless the goal says otherwise; `met` is None
    where the goal is informative only. `rates` are the contenders' messages/s,
    for the chart.
    """

    goal: int
    name: str
    figure: float
    unit: str
    baseline_name: str
    baseline: float
    ratio: float
    goal_text: str
    met: bool | None
    note: str = ""
    rates: tuple[tuple[str, float], ...] = ()


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def repeat(reps: int, once: Callable[[], float]) -> list[float]:
    """Run `once` (which times itself, so that its setup stays out) `reps` times."""
    return [once() for _ in range(reps)]


def interleave(reps: int, *runs: Callable[[], float]) -> list[list[float]]:
    """Alternate the contenders rep by rep, so slow phases of the machine hit all of them."""
    samples: list[list[float]] = [[] for _ in runs]
    for _ in range(reps):
        for run, out in zip(runs, samples, strict=True):
            out.append(run())
    return samples


#: A fresh, isolated system (its own admin port), shut down with nothing left running.
actor_system = isolated_system


def admin_port(asys: ActorSystem) -> int:
    """The TCP admin port, for another OS process to attach to the same system."""
    return int(asys.capabilities["Admin Port"])


@contextlib.contextmanager
def scratch_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="pachka-bench-") as path:
        yield path


class Echo(Actor):  # type: ignore[misc]
    """The bare-Thespian baseline: answers every message with itself."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, int | str | list):
            self.send(sender, message)


def time_asks(asys: ActorSystem, echo: ActorAddress, calls: int, payload: int = 0) -> float:
    """Seconds for `calls` sequential asks to `echo`, each answer checked.

    The message is the call's number, or with `payload` a list of that many ints.
    """
    start = time.perf_counter()
    for i in range(calls):
        message: int | list[int] = list(range(i, i + payload)) if payload else i
        if asys.ask(echo, message, 10) != message:
            raise BenchmarkError(f"echo actor answered ask {i} wrongly")
    return time.perf_counter() - start


@dataclass(frozen=True)
class Memory:
    """Resident memory of a process: all of it (RSS), and the part no other process shares.

    A forked actor starts with its parent's pages shared; writing into one copies
    it without raising RSS, so only the private part (USS) shows what a queue costs.
    """

    rss: int
    private: int


def memory(pid: int) -> Memory:
    """Read /proc/<pid>/smaps_rollup (bytes)."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                fields[key] = int(rest.split()[0]) * 1024
    if "Rss" not in fields:
        raise BenchmarkError(f"no memory figures for process {pid}")
    return Memory(fields["Rss"], fields["Private_Clean"] + fields["Private_Dirty"])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
             poll: float = 0.001) -> float:
    """Poll until `predicate` holds; returns the `time.monotonic()` it was first seen true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchmarkError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)
    return time.monotonic()
