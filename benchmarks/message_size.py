"""What byte limits cost per message: `python -m benchmarks.message_size [--e2e]`.

With `max_batch_bytes` or `critical_queue_bytes` set, every message is measured
by `Sink.message_size`: once by the server, and once more by a lingering handle
(it must know a message's size before the server sees it). The default is cheap
for `bytes` and `str` and the length of the pickle otherwise, so its cost is the
pickle's. Measured here, in one process: the default sizer on typical messages;
the core's byte bookkeeping (sizes beside the queue, cutting by bytes) against
the core without limits, for messages arriving one at a time and 1000 at a time;
and with `--e2e`, `send_message` through a lingering handle on multiprocTCPBase
with and without limits (both sizers and the bookkeeping, end to end).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

from pachka_actors.core import ExportDone, MessagesReceived, PachkaCore, StartExport
from pachka_actors.sink import default_size

MESSAGES = 200_000
BATCH = 500

#: Typical messages: a log line as bytes and as str, a non-ASCII str, a small event
#: dict (what most producers send), a 1 KB dict, an int.
SAMPLES: dict[str, Any] = {
    "bytes, 100 B": b"x" * 100,
    "str, 100 ASCII chars": "x" * 100,
    "str, 100 chars, not ASCII": "é" * 100,
    "dict, 4 keys (an event)": {"id": 123456, "user": "alice", "action": "login",
                                "at": 1733318400.123},
    "dict, 40 keys": {f"field{i}": "v" * 20 for i in range(40)},
    "int": 123456789,
}


def per_message(function: Callable[[Any], Any], message: Any, count: int = MESSAGES) -> float:
    started = time.perf_counter()
    for _ in range(count):
        function(message)
    return (time.perf_counter() - started) / count


def core_run(limits: bool, chunk: int) -> float:
    """Seconds per message through a core (exports finishing at once), messages arriving
    `chunk` at a time; with `limits`, sizes passed in (measured beforehand: the sizer's
    cost is the table above) and batches cut by bytes too."""
    extra: dict[str, Any] = {"max_batch_bytes": 10**9, "critical_queue_bytes": 10**10} \
        if limits else {}
    core = PachkaCore(max_batch_size=BATCH, critical_queue_size=10 * BATCH, max_batch_delay=None,
                      export_timeout=None, credit_timeout=None, shutdown_timeout=None,
                      drains=False, **extra)
    sizes = (100,) * chunk if limits else None
    started = time.perf_counter()
    for i in range(0, MESSAGES, chunk):
        for effect in core.handle(MessagesReceived(tuple(range(i, i + chunk)), None, sizes)):
            if isinstance(effect, StartExport):
                core.handle(ExportDone(effect.export_id))
    return (time.perf_counter() - started) / MESSAGES


def e2e(limits: bool, message: Any, count: int = 100_000) -> float:
    """Seconds per `send_message` of `message` through a lingering handle on
    multiprocTCPBase, flush included."""
    from pachka_actors import Pachka
    from pachka_actors.systems import isolated_system

    from .costs import Null

    extra: dict[str, Any] = {"max_batch_bytes": 4_000_000,
                             "critical_queue_bytes": 400_000_000} if limits else {}
    with isolated_system("multiprocTCPBase") as asys:
        server = Pachka.start(system=asys, sink=Null(), max_batch_size=500,
                              critical_queue_size=100_000, batches_per_exporter=None, **extra)
        started = time.perf_counter()
        for _ in range(count):
            server.send_message(message)
        server.flush()
        seconds = (time.perf_counter() - started) / count
        server.stop()
    return seconds


def alternated(reps: int, *contenders: Callable[[], float]) -> list[float]:
    """The median of each contender, repetition by repetition in turn: load that comes
    and goes on a shared machine then weighs on each alike."""
    runs: list[list[float]] = [[] for _ in contenders]
    for _ in range(reps):
        for figures, contender in zip(runs, contenders, strict=True):
            figures.append(contender())
    return [statistics.median(figures) for figures in runs]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.message_size")
    parser.add_argument("--e2e", action="store_true",
                        help="also send_message end to end on multiprocTCPBase")
    args = parser.parse_args(argv)
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"medians of 5 (contenders alternated), load {load}")
    print("Sink.message_size default (default_size), per message:")
    for name, message in SAMPLES.items():
        seconds = statistics.median(per_message(default_size, message) for _ in range(5))
        print(f"  {name:28s} {default_size(message):5d} B  {seconds * 1e6:6.3f} us")
    print(f"the core, {MESSAGES:,} messages, batch {BATCH}:")
    for chunk in (1, 1000):
        base, sized = alternated(5, functools.partial(core_run, False, chunk),
                                 functools.partial(core_run, True, chunk))
        print(f"  arriving {chunk:4d} at a time: no limits {base * 1e6:6.3f} us/msg, byte limits "
              f"{sized * 1e6:6.3f} us/msg ({(sized / base - 1) * 100:+.0f}%)")
    if not args.e2e:
        return
    print("send_message through a lingering handle on multiprocTCPBase, median of 5:")
    for name in ("str, 100 ASCII chars", "dict, 4 keys (an event)"):
        base, sized = alternated(5, functools.partial(e2e, False, SAMPLES[name]),
                                 functools.partial(e2e, True, SAMPLES[name]))
        print(f"  {name:28s} no limits {base * 1e6:6.2f} us/msg, byte limits "
              f"{sized * 1e6:6.2f} us/msg ({(sized / base - 1) * 100:+.0f}%)")


if __name__ == "__main__":
    main()
