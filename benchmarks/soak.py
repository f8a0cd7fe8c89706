"""The soak: many messages through one server while the sink misbehaves at random.

`python -m benchmarks.soak [--messages 1000000] [--base multiprocTCPBase] [--seed 1]
[--sink files|sqlite-ledger] [--poison 0.0005]`

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

`--sink sqlite-ledger` soaks into `SQLiteSink(..., ledger=..., dead_letter_table=...)`
instead: per attempt the sink raises, hangs past `export_timeout`, SIGKILLs its own
process before the commit or right after it (dead letters too), and a share
`--poison` of the messages has a NULL in a NOT NULL column. At the end every accepted
message must be a row or a dead letter exactly once (no duplicate, even from the
kills after commit: the ledger skips a batch it has), the rows in order, the dead
letters exactly the poison messages, and no process left; else it exits 1.

`--journal` runs the server with `journal_path` under a `Supervisor` (issue 19), and
the producer sends lists of 100 with `linger=None`, so that an acknowledged message
is one the server made durable; `--server-kills K` (with `--sink sqlite-ledger`) also
SIGKILLs the server process K times, evenly over the run, and the supervisor
restarts it on the same journal. Every acknowledged message must still be a row or
a dead letter exactly once.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import random
import signal
import sqlite3
import sys
import threading
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

from pachka_actors import Overloaded, Pachka, Sink, Supervisor
from pachka_actors.messages import RESTARTING
from pachka_actors.sink import Batch
from pachka_actors.sinks import SQLiteSink
from pachka_actors.systems import isolated_system, leftover_pids, session_pids

from ._harness import BenchmarkError, memory, scratch_dir

FAULTS = (("raise", 0.04), ("return", 0.04), ("hang", 0.005), ("exit", 0.005),
          ("sigkill", 0.005), ("record-then-sigkill", 0.005))
#: `--sink sqlite-ledger`: per attempt (a batch, a part of a split one, dead letters).
LEDGER_FAULTS = (("raise", 0.02), ("hang", 0.005), ("sigkill", 0.005),
                 ("commit-then-sigkill", 0.01))


def choose(rng: random.Random, faults: tuple[tuple[str, float], ...]) -> str:
    draw = rng.random()
    for fault, share in faults:
        if draw < share:
            return fault
        draw -= share
    return "deliver"


class FaultySink(Sink):
    """Misbehaves at random, per attempt; records what it delivered in `directory`."""

    def __init__(self, directory: str, seed: int, hang_seconds: float) -> None:
        self.directory = directory
        self.seed = seed
        self.hang_seconds = hang_seconds

    def send_batch(self, messages: list[Any], server_value: Any) -> BaseException | None:
        fault = choose(random.Random(f"{self.seed}-{messages[0]}-{time.monotonic_ns()}"), FAULTS)
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

    def record(self, messages: list[Any], killed: bool) -> None:
        name = f"{'k' if killed else 'b'}-{os.getpid()}-{time.monotonic_ns()}"
        temporary = Path(self.directory, f".{name}")
        temporary.write_bytes(array.array("q", messages).tobytes())
        temporary.rename(Path(self.directory, name))

    def retry_timeout(self, retry_num: int, failure_reason: Any, server_value: Any) -> float:
        return 0.02


class FaultyLedgerSink(SQLiteSink):
    """`SQLiteSink` into `soak (i, v)` with a ledger and a dead-letter table, misbehaving at
    random per attempt (`LEDGER_FAULTS`) around its transaction; each fault is
    appended to `<directory>/faults`."""

    def __init__(self, path: str, directory: str, seed: int, hang_seconds: float) -> None:
        super().__init__(path, "soak", ["i", "v"], ledger="batches", dead_letter_table="dead")
        self.directory = directory
        self.seed = seed
        self.hang_seconds = hang_seconds

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        fault = self.misbehave(messages)
        super().send_batch(messages, server_value)
        if fault == "commit-then-sigkill":
            os.kill(os.getpid(), signal.SIGKILL)

    def dead_letter(self, messages: Batch, error: BaseException, server_value: Any) -> None:
        fault = self.misbehave(messages)
        super().dead_letter(messages, error, server_value)
        if fault == "commit-then-sigkill":
            os.kill(os.getpid(), signal.SIGKILL)

    def misbehave(self, messages: list[Any]) -> str:
        """The fault of this attempt, done here if it comes before the commit."""
        rng = random.Random(f"{self.seed}-{getattr(messages, 'id', '')}-{time.monotonic_ns()}")
        fault = choose(rng, LEDGER_FAULTS)
        if fault != "deliver":  # counted for the report; one short append
            with open(os.path.join(self.directory, "faults"), "a") as log:
                log.write(fault + "\n")
        if fault == "raise":
            raise ConnectionError("soak: database down")
        if fault == "hang":
            time.sleep(self.hang_seconds)
        if fault == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        return fault

    def retry_timeout(self, retry_num: int, failure_reason: Any, server_value: Any) -> float:
        return 0.02


def create_soak_table(path: str) -> None:
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("create table soak (i integer not null, v integer not null)")


def stored(path: str) -> tuple[list[int], list[int]]:
    """The ids of the rows, in order of insertion, and of the dead letters."""
    with closing(sqlite3.connect(path)) as db:
        rows = [row[0] for row in db.execute("select i from soak order by rowid")]
        dead = [json.loads(row[0])[0] for row in db.execute("select message from dead")]
    return rows, dead


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


class ServerKiller(threading.Thread):
    """SIGKILLs the journaled server (the pid in its journal's lock file) each time the
    producer has had another `every` messages acknowledged."""

    def __init__(self, journal: str, kills: int, every: int, acked: list[int]) -> None:
        super().__init__(daemon=True)
        self.journal, self.kills, self.every, self.acked = journal, kills, every, acked
        self.killed: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while len(self.killed) < self.kills and not self.done.wait(0.01):
            if self.acked[0] < self.every * (len(self.killed) + 1):
                continue
            try:
                pid = int(Path(f"{self.journal}.lock").read_text())
            except (OSError, ValueError):
                continue
            if pid not in self.killed:
                os.kill(pid, signal.SIGKILL)
                self.killed.append(pid)


def journaled(asys: Any, sink: Sink, journal: str, messages: list[Any], kills: int
              ) -> tuple[int, int, int, set[int]]:
    """Under a supervisor, in lists of 100 with linger=None; the server killed `kills` times.
    Returns acknowledged, refused-and-resent, the kills done, and the ids resent after
    a kill: the killed server may have journaled them without its answer getting out,
    so they may arrive twice (under other batch ids: a producer retry, not the ledger's
    to catch)."""
    sup = Supervisor.start([Pachka.child_spec(id="pachka", sink=sink, max_batch_size=500,
                                              max_batch_delay=0.05, export_timeout=0.5,
                                              journal_path=journal)],
                           system=asys, ask_timeout=30, max_restarts=kills + 3)
    acked = [0]
    killer = ServerKiller(journal, kills, len(messages) // (kills + 1), acked)
    killer.start()

    def connect() -> Pachka:
        while (address := sup.which_children()[0][1]) in (None, RESTARTING):
            time.sleep(0.01)
        return Pachka.connect(asys, address, linger=None, ask_timeout=30)

    handle, refused, resent = connect(), 0, set[int]()
    for start in range(0, len(messages), 100):
        chunk = messages[start:start + 100]
        while chunk:
            taken = handle.send_messages(chunk)
            acked[0] += taken
            chunk = chunk[taken:]
            if chunk:  # refused (Overloaded), or the server was killed: resent
                refused += 1
                time.sleep(0.001)
                old, handle = handle.address, connect()
                if handle.address != old:
                    resent.update(m[0] for m in chunk)
    killer.done.set()
    killer.join()
    sup.stop()
    return acked[0], refused, len(killer.killed), resent


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
    parser.add_argument("--sink", choices=("files", "sqlite-ledger"), default="files")
    parser.add_argument("--poison", type=float, default=0.0005,
                        help="sqlite-ledger: the share of messages with a NULL")
    parser.add_argument("--journal", action="store_true",
                        help="journal_path, under a supervisor, lists of 100, linger=None")
    parser.add_argument("--server-kills", type=int, default=0,
                        help="with --journal and --sink sqlite-ledger: SIGKILL the server "
                             "this many times")
    args = parser.parse_args(argv)
    if args.server_kills and not (args.journal and args.sink == "sqlite-ledger"):
        parser.error("--server-kills needs --journal and --sink sqlite-ledger")
    ledger = args.sink == "sqlite-ledger"
    started = time.perf_counter()
    accepted = refused = 0
    poison_rng = random.Random(args.seed)
    poisoned: set[int] = set()
    with scratch_dir() as directory:
        db = os.path.join(directory, "soak.db")
        sink: Sink
        if ledger:
            create_soak_table(db)
            sink = FaultyLedgerSink(db, directory, args.seed, args.export_timeout * 3)
        else:
            sink = FaultySink(directory, args.seed, args.export_timeout * 3)
        with isolated_system(args.base) as asys:
            sid = asys.ask(asys.createActor("pachka_actors.systems.SessionProbe"), "sid", 10)
            watch = RssWatch(sid) if isinstance(sid, int) else None
            if watch:
                watch.start()
            stream: list[Any] = []
            for i in range(args.messages):
                if ledger and poison_rng.random() < args.poison:
                    poisoned.add(i)
                stream.append((i, None if i in poisoned else i) if ledger else i)
            kills, resent = 0, set[int]()
            if args.journal:
                accepted, refused, kills, resent = journaled(asys, sink, os.path.join(
                    directory, "journal"), stream, args.server_kills)
            else:
                server = Pachka.start(system=asys, sink=sink, max_batch_size=500,
                                      max_batch_delay=0.05, export_timeout=args.export_timeout)
                for message in stream:
                    while True:
                        try:
                            server.send_message(message)
                            accepted += 1
                            break
                        except Overloaded:
                            refused += 1
                            time.sleep(0.001)
                server.stop()
            if watch:
                watch.done.set()
                watch.join()
        if ledger:
            rows, dead = stored(db)
            faults = Counter(Path(directory, "faults").read_text().split())
        else:
            ids, killed = delivered(directory)
    samples = watch.samples if watch else []
    left = leftover_pids()
    seconds = time.perf_counter() - started
    print(f"soak: {args.messages:,} messages on {args.base} into {args.sink}, seed {args.seed}, "
          f"{seconds:.0f} s ({accepted / seconds:,.0f} msg/s)"
          + (f"; journal, server SIGKILLed {kills} times" if args.journal else ""))
    if ledger:
        counts = Counter(rows + dead)
        duplicates = sum(n - 1 for i, n in counts.items() if i not in resent)
        retried = sum(n - 1 for i, n in counts.items() if i in resent)
        lost = sum(1 for i in range(accepted) if i not in counts)
        first_seen = list(dict.fromkeys(rows))  # a resent message may come again later
        in_order = first_seen == sorted(first_seen)
        misfiled = len(set(dead) ^ poisoned)  # a good message dead-lettered, or poison a row
        print(f"accepted {accepted:,}  refused-and-resent {refused:,}  rows {len(rows):,}  "
              f"dead-lettered {len(dead):,} (poison sent {len(poisoned):,}, misfiled "
              f"{misfiled})  duplicates {duplicates:,}  lost {lost:,}  rows in order: "
              f"{'yes' if in_order else 'NO'}"
              + (f"  (resent after a server kill and delivered twice: {retried:,})"
                 if args.journal else ""))
        print("faults: " + ", ".join(f"{fault} {n:,}" for fault, n in sorted(faults.items())))
        failed = (lost or duplicates or misfiled or not in_order
                  or accepted != len(rows) + len(dead) - retried)
    else:
        counts = Counter(ids)
        lost = sum(1 for i in range(accepted) if i not in counts)
        duplicates = len(ids) - len(counts)
        unexplained = sum(1 for i, n in counts.items() if n > 1 and i not in killed)
        print(f"accepted {accepted:,}  refused-and-resent {refused:,}  delivered "
              f"{len(counts):,}  duplicates {duplicates:,} (unexplained by a kill: "
              f"{unexplained})  lost {lost:,}")
        failed = bool(lost or unexplained)
    if samples:
        print(f"server RSS start/max/end: {samples[0] / 2**20:.1f} / {max(samples) / 2**20:.1f} "
              f"/ {samples[-1] / 2**20:.1f} MiB ({len(samples)} samples)")
    print(f"processes left after shutdown: {len(left)}")
    return 1 if failed or left else 0


if __name__ == "__main__":
    sys.exit(main())
