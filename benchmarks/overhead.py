"""Goal 3: what `send_message` adds over a bare Thespian ask, on simpleSystemBase.

simpleSystemBase runs every actor in the caller's thread and pickles nothing,
so the difference is the library's own Python: handle, message classes, core
and shell (exports of full batches run inline and are included, as for a user).
Each contender gets a fresh system: simpleSystemBase scans every pending wakeup
on every message, so a system that ran a server is slower for everyone after.
"""

from __future__ import annotations

import os
import time

from pachka_actors import Pachka

from ._harness import (
    DEFAULT_BATCH,
    Echo,
    Row,
    Sizes,
    actor_system,
    interleave,
    median,
    scratch_dir,
    time_asks,
)
from ._sinks import RecordingSink, verify


def ask_seconds(messages: int) -> float:
    with actor_system("simpleSystemBase") as asys:
        return time_asks(asys, asys.createActor(Echo), messages)


def pachka_seconds(log: str, messages: int) -> float:
    """Seconds for the `send_message` loop alone; the server is started before and checked after."""
    with actor_system("simpleSystemBase") as asys:
        handle = Pachka.start(system=asys, sink=RecordingSink(log), max_batch_size=DEFAULT_BATCH)
        start = time.perf_counter()
        for i in range(messages):
            handle.send_message(i)
        elapsed = time.perf_counter() - start
        handle.stop()
    verify(log, messages, DEFAULT_BATCH)
    return elapsed


def run(sizes: Sizes) -> list[Row]:
    n = sizes.overhead_messages
    with scratch_dir() as tmp:
        logs = iter(os.path.join(tmp, f"overhead-{i}.log") for i in range(10**9))
        asks, ours = interleave(max(sizes.reps, 3), lambda: ask_seconds(n),
                                lambda: pachka_seconds(next(logs), n))
    per_ours, per_ask = median(ours) / n * 1e6, median(asks) / n * 1e6
    return [Row(3, "send_message on simpleSystemBase (us/msg)", per_ours, "us",
                "bare ask to echo", per_ask, per_ours / per_ask, "<= 1.25x",
                per_ours / per_ask <= 1.25, f"{n:,} messages, fresh system each",
                (("bare ask to echo", 1e6 / per_ask), ("pachka_actors send_message",
                                                       1e6 / per_ours)))]
