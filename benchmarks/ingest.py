"""Goal 2: bulk ingest from another OS process, against a bare Thespian ask per message.

The server runs in this process's TCP actor system with a trivial sink and the
default options; a producer started with multiprocessing's "spawn" attaches to
the same system by its admin port, as a separate program would, finds the
server by name and sends lists of `ingest_chunk` messages. The goal is held
at the default options (max_batch_size 500); a second run at 5,000 shows how
much of the cost is the exporter actor per batch. A refused tail
(`Overloaded`: queue at critical_queue_size) is resent after 1 ms, which is what
a producer must do to lose nothing. The clock runs from the first send to the
return of `stop()`, so every message counted has been delivered.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import dataclass

from thespian.actors import ActorSystem

from pachka_actors import Pachka

from ._harness import (
    DEFAULT_BATCH,
    BenchmarkError,
    Echo,
    Row,
    Sizes,
    actor_system,
    admin_port,
    median,
    scratch_dir,
    time_asks,
)
from ._sinks import RecordingSink, make_messages, verify

ECHO_NAME = "bench-echo"
BIG_BATCH = 5_000  # informative: the same ingest with a tenth of the exporter actors


@dataclass(frozen=True)
class Job:
    port: int
    server: str
    messages: int
    chunk: int
    ask_calls: int


@dataclass(frozen=True)
class Report:
    pachka_seconds: float
    resends: int
    ask_seconds: float
    producer_pid: int


def produce(job: Job) -> Report:
    """Runs in the producer process: attach, ingest, stop; then time bare asks."""
    asys = ActorSystem("multiprocTCPBase", {"Admin Port": job.port}, logDefs=None,
                       transientUnique=True)
    # Never asys.shutdown() here: that would shut the shared system down.
    handle = Pachka.connect(asys, job.server)
    chunks = [make_messages(i, min(i + job.chunk, job.messages))
              for i in range(0, job.messages, job.chunk)]
    resends = 0
    start = time.perf_counter()
    for chunk in chunks:
        while chunk:
            taken = handle.send_messages(chunk)
            if taken < len(chunk):
                chunk = chunk[taken:]
                resends += 1
                time.sleep(0.001)
            else:
                chunk = []
    handle.stop()
    pachka_seconds = time.perf_counter() - start
    ask_seconds = 0.0
    if job.ask_calls:
        echo = asys.createActor(Echo, globalName=ECHO_NAME)
        ask_seconds = time_asks(asys, echo, job.ask_calls)
    return Report(pachka_seconds, resends, ask_seconds, os.getpid())


def in_producer_process(job: Job) -> Report:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        report: Report = pool.apply(produce, (job,))
    if report.producer_pid == os.getpid():
        raise BenchmarkError("the producer ran in the benchmark's own process")
    return report


def one_rep(asys: ActorSystem, tmp: str, rep: int, sizes: Sizes, batch: int,
            ask_calls: int) -> Report:
    log = os.path.join(tmp, f"ingest-{batch}-{rep}.log")
    name = f"bench-ingest-{batch}-{rep}"
    Pachka.start(system=asys, sink=RecordingSink(log), name=name, max_batch_size=batch)
    report = in_producer_process(Job(admin_port(asys), name, sizes.ingest_messages,
                                      sizes.ingest_chunk, ask_calls))
    verify(log, sizes.ingest_messages, batch)
    return report


def bulk_rate(sizes: Sizes, batch: int = DEFAULT_BATCH,
              ask_calls: int = 0) -> tuple[float, float, int]:
    """Median messages/s of pachka's bulk ingest and of bare asks (if any), and the resends."""
    with scratch_dir() as tmp, actor_system() as asys:
        asys.createActor(Echo, globalName=ECHO_NAME)
        reports = [one_rep(asys, tmp, rep, sizes, batch, ask_calls) for rep in range(sizes.reps)]
    ours = sizes.ingest_messages / median([r.pachka_seconds for r in reports])
    asks = ask_calls / median([r.ask_seconds for r in reports]) if ask_calls else 0.0
    return ours, asks, sum(r.resends for r in reports)


def run(sizes: Sizes) -> tuple[list[Row], float]:
    """The goal's rows, and pachka's rate (default options) for goal 4 to compare against."""
    ours, asks, resends = bulk_rate(sizes, DEFAULT_BATCH, sizes.ask_calls)
    big, _, big_resends = bulk_rate(sizes, BIG_BATCH)
    note = (f"lists of {sizes.ingest_chunk:,}, {sizes.ingest_messages:,} msgs, default options "
            f"(max_batch_size {DEFAULT_BATCH}), {resends} Overloaded resends")
    return [
        Row(2, "bulk ingest from another process (msg/s)", ours, "msg/s",
            "goal", 200_000, ours / 200_000, ">= 200,000 msg/s", ours >= 200_000, note,
            (("bare TCP ask per message", asks), ("pachka_actors send_messages", ours),
             (f"pachka_actors, max_batch_size {BIG_BATCH:,}", big))),
        Row(2, "bulk ingest vs bare ask per message (msg/s)", ours, "msg/s",
            "bare TCP ask", asks, ours / asks, ">= 100x", ours / asks >= 100,
            f"ask {1e6 / asks:,.0f} us round trip"),
        Row(2, f"bulk ingest, max_batch_size {BIG_BATCH:,} (msg/s)", big, "msg/s",
            "bare TCP ask", asks, big / asks, "informative", None,
            f"{big_resends} resends; fewer exporter actors per message"),
    ], ours
