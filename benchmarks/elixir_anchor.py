"""Issue 8 (throughput): the original Elixir Pachka as an anchor, measured in the same run.

The original (Pachka 1.0.0 on Elixir/OTP, with its own benchmark `bench/`) lives
outside this repository, in `PACHKA_ELIXIR_DIR` (default
/work/shared/anchors/elixir-pachka). When `elixir` is on PATH it is copied to a
temporary directory, compiled and run with `bench/run_nomix.sh N 500 REPS`; its
`MEDIAN:` line gives msg/s for N one-by-one `Pachka.send_message/2` calls from one
process into a server with max_batch_size 500 and a counting sink, until the sink
has counted all of them. It runs once before and once after ours, and the figure
is the mean of the two medians, so that a slow phase of a shared machine is
less likely to hit only one side. Without `elixir` the anchor is skipped with a
line saying so, and our rows are still measured (without ratios).

Ours is the same workload: start a server (max_batch_size 500) whose sink only
logs one line per batch, call `send_message` N times one by one from this
process (a refused message, `Overloaded`, is resent after 1 ms so that nothing
is lost; the original reported 0 refused), wait until the sink has logged all N,
then stop. The clock runs from the first `send_message` to the last export seen,
as the original's does. Every run is checked: 0..N-1 exactly once, in order, in
batches of at most 500 (5,000 in G2's second row). Four setups, each in a fresh
actor system, alternated repetition by repetition:

- G1, multiprocTCPBase with the default options: >= 0.25x the original;
- G2, multiprocTCPBase with the documented throughput settings (`THROUGHPUT` in
  `_harness`: one exporter for every batch, bigger credits), at the workload's
  max_batch_size 500 and at 5,000 (a public option too): >= 1.0x;
- G3, simpleSystemBase with the default options: >= 0.5x.

`python -m benchmarks --only 7` runs only these rows; `python -m
benchmarks.elixir_anchor [N]` profiles the producer of the G1 setup with cProfile.
"""

from __future__ import annotations

import contextlib
import cProfile
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pachka_actors import Overloaded, Pachka

from ._harness import (
    FULL,
    THROUGHPUT,
    BenchmarkError,
    Row,
    Sizes,
    actor_system,
    describe,
    interleave,
    median,
    wait_for,
)
from ._sinks import RecordingSink, delivered, verify

GOAL = 7  # the number of these rows in `python -m benchmarks --only`
BATCH = 500
#: G2's "any public options" include the batch size: a bulk user's choice (docs/benchmarks.md).
BIG_BATCH = 5_000
ORIGINAL = os.environ.get("PACHKA_ELIXIR_DIR", "/work/shared/anchors/elixir-pachka")
SKIPPED = "elixir anchor skipped: `elixir` not installed (apt-get install -y elixir)"
_MEDIAN = re.compile(r"^MEDIAN:.*?(\d+) msg/s incl\. final export;.*?refused (\d+);"
                     r".*; 4 concurrent producers (\d+) msg/s")


@dataclass(frozen=True)
class Setup:
    goal: str
    name: str
    base: str
    target: float
    options: dict[str, Any] = field(default_factory=dict)


SETUPS = (
    Setup("G1", "multiprocTCPBase, default options", "multiprocTCPBase", 0.25),
    Setup("G2", "multiprocTCPBase, " + describe(THROUGHPUT), "multiprocTCPBase", 1.0, THROUGHPUT),
    Setup("G2", "multiprocTCPBase, " + describe({**THROUGHPUT, "max_batch_size": BIG_BATCH}),
          "multiprocTCPBase", 1.0, {**THROUGHPUT, "max_batch_size": BIG_BATCH}),
    Setup("G3", "simpleSystemBase, default options", "simpleSystemBase", 0.5),
)


@dataclass(frozen=True)
class Original:
    """The original's medians (msg/s), one per run, and what it printed first; `rates4`:
    its part (c), four producers from start to stop (`four_producers`)."""

    rates: list[float]
    version: str
    rates4: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return sum(self.rates) / len(self.rates)

    @property
    def rate4(self) -> float:
        return sum(self.rates4) / len(self.rates4)


class OriginalRunner:
    """The original's benchmark, copied to `tmp` and compiled once, run as often as asked."""

    def __init__(self, tmp: str, messages: int, reps: int) -> None:
        self.root = os.path.join(tmp, "elixir-pachka")
        self.args = [str(messages), str(BATCH), str(reps)]
        self.rates: list[float] = []
        self.rates4: list[float] = []
        self.version = ""
        shutil.copytree(ORIGINAL, self.root, ignore=shutil.ignore_patterns("ebin", "_build",
                                                                            "deps"))

    def run(self) -> None:
        bench = os.path.join(self.root, "bench")
        # The first run compiles (run_nomix.sh); later ones reuse bench/ebin.
        command = (["sh", "run_nomix.sh", *self.args] if not self.rates
                   else ["elixir", "-pa", "ebin", "bench.exs", *self.args])
        try:
            done = subprocess.run(command, cwd=bench, capture_output=True, text=True,
                                  timeout=600, check=False)
        except subprocess.TimeoutExpired as e:
            raise BenchmarkError(f"the original's benchmark timed out: {command}") from e
        lines = done.stdout.strip().splitlines()
        found = _MEDIAN.match(lines[-1]) if lines else None
        if done.returncode or not found:
            raise BenchmarkError(f"the original's benchmark failed ({done.returncode}): "
                                 f"{(done.stdout + done.stderr)[-2000:]}")
        if int(found.group(2)):
            raise BenchmarkError(f"the original refused {found.group(2)} messages: "
                                 "its rate would not count all of them")
        self.rates.append(float(found.group(1)))
        self.rates4.append(float(found.group(3)))
        self.version = lines[0]

    def result(self) -> Original:
        return Original(self.rates, self.version, self.rates4)


@contextlib.contextmanager
def original(messages: int, reps: int) -> Iterator[OriginalRunner | str]:
    """A runner for the original, or why it cannot run (the line to print)."""
    if shutil.which("elixir") is None:
        yield SKIPPED
        return
    if not os.path.isdir(os.path.join(ORIGINAL, "bench")):
        yield (f"elixir anchor skipped: the original is not at {ORIGINAL} "
               "(set PACHKA_ELIXIR_DIR)")
        return
    with tempfile.TemporaryDirectory(prefix="pachka-elixir-") as tmp:
        yield OriginalRunner(tmp, messages, reps)


@dataclass
class Tally:
    resends: int = 0


def send_one_by_one(handle: Pachka, messages: int, tally: Tally, first: int = 0) -> None:
    for i in range(first, first + messages):
        while True:
            try:
                handle.send_message(i)
                break
            except Overloaded:
                tally.resends += 1
                time.sleep(0.001)


def ours_seconds(setup: Setup, log: str, messages: int, tally: Tally,
                 profiler: cProfile.Profile | None = None) -> float:
    """Seconds from the first `send_message` until the sink has logged all `messages`.

    A `profiler` is enabled for exactly that span.
    """
    with actor_system(setup.base) as asys:
        options = {"max_batch_size": BATCH, **setup.options}
        handle = Pachka.start(system=asys, sink=RecordingSink(log), **options)
        # simpleSystemBase runs actors only inside a call into the system: ask for the
        # status while waiting. On TCP only the log is read, so the wait costs nothing.
        inline = setup.base == "simpleSystemBase"
        if profiler:
            profiler.enable()
        start = time.perf_counter()
        send_one_by_one(handle, messages, tally)
        wait_for(lambda: (not inline or bool(handle.status())) and delivered(log) >= messages,
                 60 + messages / 1000, f"{messages} messages exported ({setup.name})")
        elapsed = time.perf_counter() - start
        if profiler:
            profiler.disable()
        handle.stop()
    verify(log, messages, options["max_batch_size"])
    return elapsed


def run(sizes: Sizes) -> list[Row]:
    n, reps = sizes.anchor_messages, sizes.reps
    tallies = [Tally() for _ in SETUPS]
    with original(n, reps) as runner, tempfile.TemporaryDirectory(prefix="pachka-bench-") as tmp:
        if isinstance(runner, str):
            print(runner, file=sys.stderr)
        else:
            runner.run()
        logs = iter(os.path.join(tmp, f"anchor-{i}.log") for i in range(10**9))

        def contender(setup: Setup, tally: Tally) -> Callable[[], float]:
            return lambda: ours_seconds(setup, next(logs), n, tally)

        seconds = interleave(reps, *(contender(s, t) for s, t in zip(SETUPS, tallies,
                                                                     strict=True)))
        if not isinstance(runner, str):
            runner.run()
            theirs: Original | str = runner.result()
        else:
            theirs = runner
    return rows(n, theirs, [n / median(s) for s in seconds], tallies)


def rows(n: int, theirs: Original | str, rates: list[float], tallies: list[Tally]) -> list[Row]:
    what = f"{n:,} one-by-one send_message, max_batch_size {BATCH}, until all exported"
    if isinstance(theirs, str):
        out = [Row(GOAL, "original Elixir Pachka 1.0.0 (msg/s)", 0, "msg/s", "", 0, 0,
                   "anchor", None, theirs)]
        base = 0.0
    else:
        base = theirs.rate
        runs = " and ".join(f"{r:,.0f}" for r in theirs.rates)
        out = [Row(GOAL, "original Elixir Pachka 1.0.0 (msg/s)", base, "msg/s", "", 0, 0,
                   "anchor", None, f"{what}; medians {runs} (before/after ours); "
                                   f"{theirs.version}")]
    for setup, rate, tally in zip(SETUPS, rates, tallies, strict=True):
        ratio = rate / base if base else 0.0
        contenders = (("original Elixir Pachka", base), ("pachka_actors", rate)) if base else ()
        out.append(Row(GOAL, f"{setup.goal}: {setup.name} (msg/s)", rate, "msg/s",
                       "original" if base else "", base, ratio, f">= {setup.target}x",
                       ratio >= setup.target if base else None,
                       f"{tally.resends} Overloaded resends", contenders))
    return out


def profile(messages: int) -> None:
    """cProfile on the producer's thread (this process) for the G1 setup, one run: the
    timed span only (send loop and wait), not the actor system's start and shutdown."""
    with tempfile.TemporaryDirectory(prefix="pachka-bench-") as tmp:
        profiler, tally = cProfile.Profile(), Tally()
        seconds = ours_seconds(SETUPS[0], os.path.join(tmp, "profile.log"), messages, tally,
                               profiler)
    print(f"{SETUPS[0].name}: {messages / seconds:,.0f} msg/s under cProfile, "
          f"{tally.resends} Overloaded resends")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(20)


def main(argv: list[str]) -> None:
    profile(int(argv[0]) if argv else FULL.anchor_messages)


if __name__ == "__main__":
    main(sys.argv[1:])
