"""The soak: many messages through one server while the sink misbehaves at random.

`python -m benchmarks.soak [--messages 1000000] [--base multiprocTCPBase] [--seed 1]`

A producer sends every message with `send_message` (the default lingering
handle), resending after a short pause when refused as `Overloaded`. The sink
decides per attempt, at random, to deliver, raise, return an error, hang past
`export_timeout`, `os._exit` or SIGKILL its own process; a delivered batch is
recorded as one file of ids, written and renamed before `send_batch` returns,
so the record survives the exporter. At the end it prints accepted, delivered,
duplicates, lost, the server's resident memory at start, max and end, and the
processes left after `shutdown()`; it exits 1 if anything accepted was lost or
any process was left.

Duplicates are expected only where an export was killed after its batch was
recorded (the sink cannot tell the kill from a hang); they are reported apart.
"""

from __future__ import annotations

import argparse
import array
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pachka_actors import Overloaded, Pachka, Sink
from pachka_actors.systems import isolated_system, leftover_pids, session_pids

from ._harness import BenchmarkError, memory, scratch_dir

FAULTS = (("raise", 0.04), ("return", 0.04), ("hang", 0.005), ("exit", 0.005),
          ("sigkill", 0.005), ("record-then-sigkill", 0.005))


class FaultySink(Sink):
    """Misbehaves at random, per attempt; records what it delivered in `directory`."""

    def __init__(self, directory: str, seed: int, hang_seconds: float) -> None:
        self.directory = directory
        self.seed = seed
        self.hang_seconds = hang_seconds

    def send_batch(self, messages: list[Any], server_value: Any) -> BaseException | None:
        fault = self.choose(random.Random(f"{self.seed}-{messages[0]}-{time.monotonic_ns()}"))
        if fault == "raise":
            raise ConnectionError("soak: sink down")
        if fault == "return":
            return TimeoutError("soak: sink busy")
        if fault == "hang":
            time.sleep(self.hang_seconds)
        if fault == "exit":
            os._exit(3)
        if fault == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        self.record(messages, killed=fault == "record-then-sigkill")
        if fault == "record-then-sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        return None

    @staticmethod
    def choose(rng: random.Random) -> str:
        draw = rng.random()
        for fault, share in FAULTS:
            if draw < share:
                return fault
            draw -= share
        return "deliver"

    def record(self, messages: list[Any], killed: bool) -> None:
        name = f"{'k' if killed else 'b'}-{os.getpid()}-{time.monotonic_ns()}"
        temporary = Path(self.directory, f".{name}")
        temporary.write_bytes(array.array("q", messages).tobytes())
        temporary.rename(Path(self.directory, name))

    def retry_timeout(self, retry_num: int, failure_reason: Any, server_value: Any) -> float:
        return 0.02


def delivered(directory: str) -> tuple[list[int], set[int]]:
    """Every id recorded (with repeats), and the ids of batches recorded by a killed export."""
    ids: list[int] = []
    killed: set[int] = set()
    for path in Path(directory).iterdir():
        if path.name.startswith("."):
            continue
        batch = array.array("q")
        batch.frombytes(path.read_bytes())
        ids.extend(batch)
        if path.name.startswith("k-"):
            killed.update(batch)
    return ids, killed


class RssWatch(threading.Thread):
    """Samples the server's resident memory: the server is the parent of the exporters."""

    def __init__(self, sid: int) -> None:
        super().__init__(daemon=True)
        self.sid = sid
        self.server: int | None = None
        self.samples: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.25):
            if self.server is None:
                parents = {_ppid(pid) for pid in session_pids(self.sid)}
                exporters_parent = parents - {self.sid, 1, None}
                self.server = min(exporters_parent, default=None)  # type: ignore[type-var]
            if self.server is not None:
                try:
                    self.samples.append(memory(self.server).rss)
                except (OSError, BenchmarkError):
                    return  # the server has exited


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--base", default="multiprocTCPBase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--export-timeout", type=float, default=0.5)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    accepted = refused = 0
    with scratch_dir() as directory:
        with isolated_system(args.base) as asys:
            sid = asys.ask(asys.createActor("pachka_actors.systems.SessionProbe"), "sid", 10)
            watch = RssWatch(sid) if isinstance(sid, int) else None
            if watch:
                watch.start()
            server = Pachka.start(system=asys, sink=FaultySink(directory, args.seed,
                                                                args.export_timeout * 3),
                                  max_batch_size=500, max_batch_delay=0.05,
                                  export_timeout=args.export_timeout)
            for i in range(args.messages):
                while True:
                    try:
                        server.send_message(i)
                        accepted += 1
                        break
                    except Overloaded:
                        refused += 1
                        time.sleep(0.001)
            server.stop()
            if watch:
                watch.done.set()
                watch.join()
        ids, killed = delivered(directory)
    counts = Counter(ids)
    lost = sum(1 for i in range(accepted) if i not in counts)
    duplicates = len(ids) - len(counts)
    unexplained = sum(1 for i, n in counts.items() if n > 1 and i not in killed)
    samples = watch.samples if watch else []
    left = leftover_pids()
    seconds = time.perf_counter() - started
    print(f"soak: {args.messages:,} messages on {args.base}, seed {args.seed}, "
          f"{seconds:.0f} s ({accepted / seconds:,.0f} msg/s)")
    print(f"accepted {accepted:,}  refused-and-resent {refused:,}  delivered {len(counts):,}  "
          f"duplicates {duplicates:,} (unexplained by a kill: {unexplained})  lost {lost:,}")
    if samples:
        print(f"server RSS start/max/end: {samples[0] / 2**20:.1f} / {max(samples) / 2**20:.1f} "
              f"/ {samples[-1] / 2**20:.1f} MiB ({len(samples)} samples)")
    print(f"processes left after shutdown: {len(left)}")
    return 1 if lost or left or unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
