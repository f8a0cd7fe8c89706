"""Goal 11 (issue 20, G4): four producers, against the original Elixir Pachka's four.

The original's benchmark (`bench.exs`, part (c), run by `elixir_anchor.OriginalRunner`)
starts a server with max_batch_size 500, sends N messages from four concurrent
processes, N/4 each, one by one, and stops it; its figure is the messages
exported per second from `start_link` to the return of `stop`. Ours is the same
span and workload with the throughput settings (`THROUGHPUT`), two ways:

- four OS processes, each with its own handle (`Pachka.connect` by name; the
  processes are started and attached to the actor system before the clock runs,
  as the original's tasks cost microseconds to start);
- four threads sharing one handle.

A refused message is resent after 1 ms, so that every message is counted
delivered (the original refuses none). Every run is checked: each message
exactly once, each producer's in its order, batches of at most 500. Goal: >= 1.0x
the original, measured in the same run (before and after ours, the mean of
the two).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from thespian.actors import ActorSystem

from pachka_actors import Pachka

from ._harness import (
    THROUGHPUT,
    BenchmarkError,
    Row,
    Sizes,
    actor_system,
    admin_port,
    describe,
    interleave,
    median,
    scratch_dir,
)
from ._sinks import ListingSink, verify_interleaved
from .elixir_anchor import BATCH, Original, Tally, original, send_one_by_one

GOAL = 11  # the number of these rows in `python -m benchmarks --only`
PRODUCERS = 4
OPTIONS: dict[str, Any] = {**THROUGHPUT, "max_batch_size": BATCH}


def _send_range(handle: Pachka, first: int, count: int) -> int:
    """`count` one-by-one sends from `first`; the number of `Overloaded` resends."""
    tally = Tally()
    send_one_by_one(handle, count, tally, first)
    return tally.resends


# ---- the producer processes --------------------------------------------------------------


def _producer(commands: Any, results: Any) -> None:
    """A producer process: attach to a system, then send a range through its own handle,
    as told; each step answered on `results`."""
    system: ActorSystem | None = None
    while (command := commands.get()) is not None:
        if command[0] == "attach":
            # Never system.shutdown() here: that would shut the shared system down.
            system = ActorSystem("multiprocTCPBase", {"Admin Port": command[1]}, logDefs=None,
                                 transientUnique=True)
            results.put("ready")
        else:
            _, name, first, count = command
            assert system is not None
            handle = Pachka.connect(system, name)
            resends = _send_range(handle, first, count)
            handle.close()  # ships the rest and waits until the server has it
            results.put(resends)


class Producers:
    """Four producer processes, started once ("spawn") and told what to do per run."""

    def __init__(self, count: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.results = ctx.Queue()
        self.commands = [ctx.Queue() for _ in range(count)]
        self.processes = [ctx.Process(target=_producer, args=(q, self.results), daemon=True)
                          for q in self.commands]
        for process in self.processes:
            process.start()

    def tell(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        for queue, command in zip(self.commands, commands, strict=True):
            queue.put(command)
        return [self.results.get(timeout=600) for _ in commands]

    def close(self) -> None:
        for queue in self.commands:
            queue.put(None)
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()


# ---- one run each -------------------------------------------------------------------------


def processes_seconds(producers: Producers, log: str, messages: int, tally: Tally) -> float:
    """Start to stop: four processes, each with its own handle."""
    each = messages // PRODUCERS
    with actor_system("multiprocTCPBase") as asys:
        producers.tell([("attach", admin_port(asys))] * PRODUCERS)
        name = f"bench-four-{os.path.basename(log)}"
        start = time.perf_counter()
        handle = Pachka.start(system=asys, sink=ListingSink(log), name=name, **OPTIONS)
        tally.resends += sum(producers.tell([("send", name, p * each, each)
                                             for p in range(PRODUCERS)]))
        handle.stop()
        elapsed = time.perf_counter() - start
    verify_interleaved(log, PRODUCERS, each, BATCH)
    return elapsed


def threads_seconds(log: str, messages: int, tally: Tally) -> float:
    """Start to stop: four threads sharing one handle."""
    each = messages // PRODUCERS
    resends: list[int] = []
    with actor_system("multiprocTCPBase") as asys:
        start = time.perf_counter()
        handle = Pachka.start(system=asys, sink=ListingSink(log), **OPTIONS)
        threads = [threading.Thread(target=lambda p=p: resends.append(
            _send_range(handle, p * each, each))) for p in range(PRODUCERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        handle.stop()
        elapsed = time.perf_counter() - start
    if len(resends) != PRODUCERS:
        raise BenchmarkError("a producer thread failed")
    tally.resends += sum(resends)
    verify_interleaved(log, PRODUCERS, each, BATCH)
    return elapsed


SETUPS = ("four processes, a handle each", "four threads sharing one handle")


def run(sizes: Sizes) -> list[Row]:
    n, reps = sizes.anchor_messages, sizes.reps
    tallies = [Tally() for _ in SETUPS]
    producers = Producers(PRODUCERS)
    try:
        with original(n, reps) as runner, scratch_dir() as tmp:
            if isinstance(runner, str):
                print(runner, file=sys.stderr)
            else:
                runner.run()
            logs = iter(os.path.join(tmp, f"four-{i}.log") for i in range(10**9))
            contenders: list[Callable[[], float]] = [
                lambda: processes_seconds(producers, next(logs), n, tallies[0]),
                lambda: threads_seconds(next(logs), n, tallies[1])]
            seconds = interleave(reps, *contenders)
            theirs: Original | str
            if isinstance(runner, str):
                theirs = runner
            else:
                runner.run()
                theirs = runner.result()
    finally:
        producers.close()
    return rows(n, theirs, [n / median(s) for s in seconds], tallies)


def rows(n: int, theirs: Original | str, rates: list[float], tallies: list[Tally]) -> list[Row]:
    what = (f"{n:,} messages from {PRODUCERS} producers, {n // PRODUCERS:,} each, one by one, "
            f"max_batch_size {BATCH}, start to stop")
    if isinstance(theirs, str):
        out = [Row(GOAL, "original Elixir Pachka 1.0.0, four producers (msg/s)", 0, "msg/s",
                   "", 0, 0, "anchor", None, theirs)]
        base = 0.0
    else:
        base = theirs.rate4
        runs = " and ".join(f"{r:,.0f}" for r in theirs.rates4)
        out = [Row(GOAL, "original Elixir Pachka 1.0.0, four producers (msg/s)", base, "msg/s",
                   "", 0, 0, "anchor", None, f"{what}; bench.exs part (c); medians {runs} "
                                             f"(before/after ours); {theirs.version}")]
    for setup, rate, tally in zip(SETUPS, rates, tallies, strict=True):
        ratio = rate / base if base else 0.0
        contenders = (("original, four producers", base), ("pachka_actors", rate)) if base \
            else ()
        out.append(Row(GOAL, f"G4: multiprocTCPBase, {setup}, {describe(THROUGHPUT)} (msg/s)",
                       rate, "msg/s", "original" if base else "", base, ratio, ">= 1.0x",
                       ratio >= 1.0 if base else None,
                       f"{tally.resends} Overloaded resends", contenders))
    return out
