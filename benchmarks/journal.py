"""Goal 10 (issue 19): what the crash journal costs, next to no journal, in the same run.

Two workloads on multiprocTCPBase at max_batch_size 500 with the throughput settings
(`THROUGHPUT`), each set-up in a fresh actor system, alternated repetition by
repetition, the journal on the same disk as the benchmark's scratch directory:

- lingering: goal 7's G2 workload, `anchor_messages` one-by-one `send_message` calls
  from this process, shipped by the handle in lists of up to `buffer_size`; until the
  sink has logged them all;
- lists of 100: `send_messages` of 100 messages each with `linger=None`, so that
  every 100 messages are one shipment, one acknowledgement and (with
  `journal_sync="always"`) one `fdatasync`: the journal's worst case short of single
  messages.

For each: no journal, then `journal_sync` "always", 0.05 s and "os". Every run is
checked (0..N-1 exactly once, in order) and the journal must be empty after `stop()`.
`python -m benchmarks --only 10` runs only these rows.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

from pachka_actors import Pachka

from ._harness import THROUGHPUT, BenchmarkError, Row, Sizes, actor_system, interleave, median
from ._sinks import RecordingSink, delivered, make_messages, verify
from .elixir_anchor import Setup, Tally, ours_seconds

GOAL = 10
BATCH = 500
LIST = 100
POLICIES: tuple[Any, ...] = (None, "always", 0.05, "os")


def lists_seconds(options: dict[str, Any], log: str, messages: int) -> float:
    """Seconds from the first `send_messages` until the sink has logged all `messages`."""
    with actor_system("multiprocTCPBase") as asys:
        handle = Pachka.start(system=asys, sink=RecordingSink(log), linger=None,
                              max_batch_size=BATCH, **options)
        start = time.perf_counter()
        for first in range(0, messages, LIST):
            chunk = make_messages(first, min(first + LIST, messages))
            while chunk:
                chunk = chunk[handle.send_messages(chunk):]
        while delivered(log) < messages:
            time.sleep(0.001)
        elapsed = time.perf_counter() - start
        handle.stop()
    verify(log, messages, BATCH)
    return elapsed


def _name(policy: Any) -> str:
    return "no journal" if policy is None else f"journal_sync={policy!r}"


def run(sizes: Sizes) -> list[Row]:
    n, reps = sizes.anchor_messages, sizes.reps
    with tempfile.TemporaryDirectory(prefix="pachka-bench-") as tmp:
        paths = iter(os.path.join(tmp, f"run-{i}") for i in range(10**9))

        def options(policy: Any, path: str) -> dict[str, Any]:
            journal = {} if policy is None else {"journal_path": f"{path}.journal",
                                                 "journal_sync": policy}
            return {**THROUGHPUT, **journal}

        def checked(policy: Any, path: str, seconds: float) -> float:
            if policy is not None and os.path.getsize(f"{path}.journal"):
                raise BenchmarkError(f"the journal of {_name(policy)} is not empty after stop()")
            return seconds

        def lingering(policy: Any) -> Callable[[], float]:
            def once() -> float:
                path = next(paths)
                setup = Setup("", _name(policy), "multiprocTCPBase", 0.0,
                              options(policy, path))
                return checked(policy, path, ours_seconds(setup, f"{path}.log", n, Tally()))
            return once

        def lists(policy: Any) -> Callable[[], float]:
            def once() -> float:
                path = next(paths)
                return checked(policy, path,
                               lists_seconds(options(policy, path), f"{path}.log", n))
            return once

        seconds = interleave(reps, *map(lingering, POLICIES), *map(lists, POLICIES))
    rates = [n / median(s) for s in seconds]
    out = []
    for workload, found in (("lingering send_message", rates[:len(POLICIES)]),
                            (f"send_messages lists of {LIST}", rates[len(POLICIES):])):
        base = found[0]
        for policy, rate in zip(POLICIES, found, strict=True):
            out.append(Row(GOAL, f"{workload}, {_name(policy)} (msg/s)", rate, "msg/s",
                           "no journal", base, rate / base, "informative", None,
                           f"{n:,} msgs, max_batch_size {BATCH}, throughput settings, "
                           f"median of {reps}"))
    return out
