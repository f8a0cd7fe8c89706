"""Goal 5: how soon after `export_timeout` a hung sink is abandoned (its exporter SIGKILLed).

The sink hangs on its first attempt and logs its pid and start time; this
process polls /proc every millisecond for that exporter to die (zombie or gone).
The server arms its export timer when it starts the export, which is when the
`send_messages` that filled the batch is answered, so the lateness is
`death - answer - export_timeout`. How long `send_batch` itself got
(`death - sink start`) is reported too: the exporter's start-up eats into it.
"""

from __future__ import annotations

import os
import time

from thespian.actors import ActorSystem

from pachka_actors import Pachka
from pachka_actors._process import ended

from ._harness import (
    BenchmarkError,
    Row,
    Sizes,
    actor_system,
    median,
    scratch_dir,
    wait_for,
)
from ._sinks import HangOnceSink, make_messages, verify

BATCH = 10
LIMIT_MS = 50.0


def attempts(path: str) -> list[tuple[int, float]]:
    try:
        with open(path) as f:
            lines = f.read().split("\n")[:-1]
    except FileNotFoundError:
        return []
    return [(int(pid), float(start)) for pid, start in (line.split() for line in lines)]


def one_rep(asys: ActorSystem, tmp: str, rep: int, timeout: float) -> tuple[float, float]:
    """(lateness after export_timeout, time send_batch got), in seconds."""
    log, tries = os.path.join(tmp, f"timeout-{rep}.log"), os.path.join(tmp, f"tries-{rep}")
    handle = Pachka.start(system=asys, sink=HangOnceSink(log, tries), max_batch_size=BATCH,
                          export_timeout=timeout, max_batch_delay=None)
    if handle.send_messages(make_messages(0, BATCH)) != BATCH:
        raise BenchmarkError("the server refused the batch")
    answered = time.monotonic()
    wait_for(lambda: bool(attempts(tries)), 10 + timeout, "the hung export to start")
    pid, sink_start = attempts(tries)[0]
    died = wait_for(lambda: ended(pid), 10 + timeout,
                    "the hung exporter to be killed")
    wait_for(lambda: len(attempts(tries)) >= 2, 10, "the retry")
    handle.stop()
    verify(log, BATCH, BATCH)
    return died - answered - timeout, died - sink_start


def run(sizes: Sizes) -> list[Row]:
    timeout = sizes.export_timeout
    with scratch_dir() as tmp, actor_system() as asys:
        samples = [one_rep(asys, tmp, rep, timeout) for rep in range(sizes.timeout_reps)]
    late = median([s[0] for s in samples]) * 1000
    worst = max(s[0] for s in samples) * 1000
    given = min(s[1] for s in samples) * 1000
    return [Row(5, "hung sink abandoned after export_timeout (ms late)", late, "ms",
                "export_timeout", timeout * 1000, late / (timeout * 1000),
                f"<= {LIMIT_MS:.0f} ms late", worst <= LIMIT_MS,
                f"worst {worst:.1f} ms; send_batch got >= {given:.0f} ms of "
                f"{timeout * 1000:.0f}")]
