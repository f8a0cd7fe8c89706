"""`python -m benchmarks [--quick] [--only 0 1 ...] [--json PATH] [--svg PATH] [--strict]`.

Prints one table of figures, baselines, ratios and goals (issue 4; goal 7 is issue 8's
comparison with the original Elixir Pachka, skipped with a line when `elixir` is not
installed; goal 9 an actor producer before and after `BufferedProducer`; goal 10 the
crash journal's cost next to no journal, per `journal_sync`; goal 11 four producers
against the original's four, issue 20's G4). Exits 1 only
when a benchmark crashes or loses messages; `--strict` also exits 2 when a goal
is not met. `--quick` uses small sizes and is the CI smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from importlib.metadata import version

import pachka_actors
from pachka_actors.systems import RECORDS

from . import (
    anchors,
    elixir_anchor,
    export_timeout,
    four_producers,
    ingest,
    journal,
    memory,
    overhead,
    pool,
    producer,
    sqlite_insert,
    thread_batcher,
)
from ._harness import FULL, QUICK, Row, Sizes


def load() -> str:
    """The 1-minute load average: other work on the machine skews every figure."""
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "0"


def machine() -> dict[str, str]:
    """What the figures depend on: cores, CPU, Python, Thespian, the library measured."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"nproc": str(os.cpu_count()), "cpu": model,
            "python": platform.python_version(), "thespian": version("thespian"),
            "kernel": platform.release(), "pachka_actors": library()}


def library() -> str:
    """Which pachka_actors was measured: its directory and, in a git checkout, its commit."""
    where = os.path.dirname(os.path.dirname(os.path.abspath(pachka_actors.__file__)))
    try:
        commit = subprocess.run(["git", "-C", where, "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        commit = ""
    return f"{where} ({commit or 'not a git checkout'})"


def fmt(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def table(rows: list[Row]) -> str:
    """A Markdown table, readable in a terminal and pasted as is into docs/benchmarks.md."""
    lines = ["| goal | comparison | figure | baseline | ratio | goal | met | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        met = "n/a" if r.met is None else ("met" if r.met else "NOT met")
        baseline, ratio = "-", "-"
        if r.baseline_name:
            baseline, ratio = f"{r.baseline_name}: {fmt(r.baseline)}", f"{fmt(r.ratio)}x"
        lines.append(f"| {r.goal or 'anchor'} | {r.name} | {fmt(r.figure)} {r.unit} | "
                     f"{baseline} | {ratio} | {r.goal_text} | {met} | {r.note} |")
    return "\n".join(lines)


def run_goals(sizes: Sizes, only: set[int]) -> tuple[list[Row], list[str]]:
    """Every selected goal in order; a crash in one is reported and the others still run."""
    rows: list[Row] = []
    failures: list[str] = []
    bulk: list[float] = []

    def goal2() -> list[Row]:
        found, rate = ingest.run(sizes)
        bulk.append(rate)
        return found

    def goal4() -> list[Row]:
        rate = bulk[0] if bulk else ingest.bulk_rate(sizes)[0]
        return thread_batcher.run(sizes, rate)

    goals: dict[int, Callable[[], list[Row]]] = {
        0: lambda: anchors.run(sizes), 1: lambda: sqlite_insert.run(sizes), 2: goal2,
        3: lambda: overhead.run(sizes), 4: goal4, 5: lambda: export_timeout.run(sizes),
        6: lambda: memory.run(sizes), 7: lambda: elixir_anchor.run(sizes),
        8: lambda: pool.run(sizes), 9: lambda: producer.run(sizes),
        10: lambda: journal.run(sizes),
        11: lambda: four_producers.run(sizes)}
    for number, goal in goals.items():
        if number not in only:
            continue
        start = time.perf_counter()
        try:
            found = goal()
        except Exception:
            failures.append(f"goal {number}: {traceback.format_exc()}")
            print(f"goal {number} FAILED:\n{traceback.format_exc()}", file=sys.stderr)
            continue
        rows += found
        print(f"goal {number} done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return rows, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--only", type=int, nargs="+", choices=range(12), metavar="GOAL",
                        default=list(range(12)),
                        help="run only these goals (0: anchors, 1-6, 7: Elixir Pachka "
                             "anchor, 8: pool and convention, 9: actor producer before "
                             "and after BufferedProducer, 10: the crash journal per "
                             "journal_sync, 11: four producers against Elixir "
                             "Pachka's four)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--svg", metavar="PATH", help="also draw the chart (benchmarks.chart)")
    parser.add_argument("--strict", action="store_true", help="exit 2 when a goal is not met")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    started, load_before = time.perf_counter(), load()
    if not args.quick and float(load_before) > 0.5:
        print(f"warning: load average {load_before} before the run: other work competes for "
              f"the {os.cpu_count()} cores and skews every figure", file=sys.stderr)
    rows, failures = run_goals(sizes, set(args.only))
    info = {**machine(), "load average before/after": f"{load_before}/{load()}"}
    print(f"\n{'quick' if args.quick else 'full'} run, {time.perf_counter() - started:.0f} s; "
          + ", ".join(f"{k} {v}" for k, v in info.items()) + "\n")
    print(table(rows))
    seconds = [r.shutdown_seconds for r in RECORDS if r.shutdown_seconds is not None]
    killed = [pid for r in RECORDS for pid in r.killed]
    print(f"\n{len(seconds)} actor systems shut down in {sum(seconds):.1f} s "
          f"(longest {max(seconds, default=0):.1f} s); processes left running and "
          f"SIGKILLed after shutdown(): {len(killed)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "quick": args.quick, "sizes": asdict(sizes),
                       "rows": [asdict(r) for r in rows]}, f, indent=1)
    if args.svg:
        from .chart import write_svg
        write_svg(rows, args.svg)
    if failures:
        print(f"\nFAILED (crashed or lost messages): {len(failures)} goal(s); see stderr")
        return 1
    if args.strict and any(r.met is False for r in rows):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
