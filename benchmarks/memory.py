"""Goal 6: the server's resident memory per queued message, and under sustained overload.

The sink blocks its first batch, so everything sent after it stays queued until
`critical_queue_size`. The server's pid is the blocked exporter's parent (the
library has no way to tell it). Its memory is read from /proc: once with the
queue empty, once full, and once more after `overload_rounds` lists were
refused. The per-message figure uses private resident memory (USS), because the
server is a forked process whose copy-on-write pages do not raise RSS; RSS is
in the notes. The baseline is the same messages as a plain list in this process.
"""

from __future__ import annotations

import gc
import os
import tracemalloc

from pachka_actors import Pachka

from ._harness import (
    DEFAULT_BATCH,
    BenchmarkError,
    Row,
    Sizes,
    actor_system,
    memory,
    scratch_dir,
    wait_for,
)
from ._sinks import BlockFirstSink, make_messages, verify

PREFIX = "Post "
CHUNK = 1_000
FLAT_BYTES = 1 << 20  # growth under overload below this counts as flat


def list_bytes_per_message(count: int) -> float:
    """Bytes per message of a plain list of the same messages (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    messages = make_messages(0, count, PREFIX)
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del messages
    return size / count


def run(sizes: Sizes) -> list[Row]:
    queue = sizes.memory_queue
    total = DEFAULT_BATCH + queue
    with scratch_dir() as tmp, actor_system() as asys:
        log, started, release = (os.path.join(tmp, name) for name in ("log", "pid", "go"))
        handle = Pachka.start(system=asys, sink=BlockFirstSink(log, started, release, PREFIX),
                              max_batch_size=DEFAULT_BATCH, critical_queue_size=queue,
                              export_timeout=None, max_batch_delay=None)
        if handle.send_messages(make_messages(0, DEFAULT_BATCH, PREFIX)) != DEFAULT_BATCH:
            raise BenchmarkError("the server refused the first batch")
        wait_for(lambda: os.path.exists(started), 30, "the blocked export to start")
        with open(started) as f:
            server = int(f.read())
        empty = memory(server)
        sent = DEFAULT_BATCH
        while sent < total:
            chunk = make_messages(sent, min(sent + CHUNK, total), PREFIX)
            taken = handle.send_messages(chunk)
            if taken != len(chunk):
                raise BenchmarkError(f"refused at {sent + taken} of {total} messages")
            sent += taken
        status = handle.status()
        if status.queue_length != queue:
            raise BenchmarkError(f"queue holds {status.queue_length}, expected {queue}")
        full = memory(server)
        refused = make_messages(total, total + CHUNK, PREFIX)
        for _ in range(sizes.overload_rounds):
            if handle.send_messages(refused) != 0:
                raise BenchmarkError("a message was accepted beyond critical_queue_size")
        overloaded = memory(server)
        open(release, "w").close()
        handle.stop()
        verify(log, total, DEFAULT_BATCH)
    per_message = (full.private - empty.private) / queue
    per_message_rss = (full.rss - empty.rss) / queue
    plain = list_bytes_per_message(queue)
    growth = overloaded.private - full.private
    return [
        Row(6, f"server memory per queued message ({queue:,} queued)", per_message, "B",
            "same messages in a list", plain, per_message / plain, "report", None,
            f"private {empty.private / 2**20:.1f} -> {full.private / 2**20:.1f} MiB; "
            f"RSS {per_message_rss:.0f} B/msg"),
        Row(6, "server memory growth under overload (KiB)", growth / 1024, "KiB",
            "queued, private (KiB)", full.private / 1024, growth / full.private,
            "flat (< 1 MiB)", growth < FLAT_BYTES,
            f"{sizes.overload_rounds * CHUNK:,} messages refused; RSS "
            f"{(overloaded.rss - full.rss) / 1024:+.0f} KiB"),
    ]
