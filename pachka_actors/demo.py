"""The demo: real messages batched into an SQLite file by `SQLiteSink` on a multi-process system.

With the `demo` extra (tqdm) it shows a progress bar of the rows delivered;
without it, a plain line every tenth of the way.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time
from typing import Any, Protocol

from .pachka import Pachka
from .sinks import SQLiteSink
from .systems import session_pids, shutdown_system, start_system

# `seq` numbers the rows as they are written, so the check sees the delivery order.
SCHEMA = """create table if not exists events (seq integer primary key autoincrement,
                                              id integer, kind text, user_id integer)"""

#: Longest wait for the rows to arrive before stopping the server anyway (stop drains).
DELIVERY_WAIT = 60.0


class Progress(Protocol):
    def show(self, done: int) -> None: ...

    def close(self) -> None: ...


class PlainProgress:
    """Progress as plain lines, for when tqdm is not installed."""

    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self.tenths = 0

    def show(self, done: int) -> None:
        tenths = done * 10 // self.total
        if tenths > self.tenths:
            self.tenths = tenths
            print(f"delivered {done} of {self.total}", file=sys.stderr)

    def close(self) -> None:
        pass


class TqdmProgress:
    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="delivered", unit="msg")

    def show(self, done: int) -> None:
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def progress(total: int) -> Progress:
    """A tqdm bar if the `demo` extra is installed, else plain lines."""
    try:
        return TqdmProgress(total)
    except ImportError:
        return PlainProgress(total)


def event(i: int) -> dict[str, Any]:
    return {"id": i, "kind": ("login", "page_view", "purchase")[i % 3], "user_id": i % 97}


def delivered(db_path: str) -> int:
    with sqlite3.connect(db_path) as db:
        count: int = db.execute("select count(*) from events").fetchone()[0]
    db.close()
    return count


def run(db_path: str | None = None, count: int = 5000, base: str = "multiprocTCPBase") -> int:
    """Run the demo into `db_path`, or into a temporary file removed however the run ends."""
    if db_path is not None:
        print(f"database:   {db_path}")
        return deliver(db_path, count, base)
    with tempfile.TemporaryDirectory(prefix="pachka-demo-") as directory:
        db_path = os.path.join(directory, "events.sqlite3")
        print(f"database:   {db_path} (removed at the end; --db keeps one)")
        return deliver(db_path, count, base)


def deliver(db_path: str, count: int, base: str) -> int:
    """Send `count` events (a fifth one by one, the rest in lists), stop, and check the table."""
    with sqlite3.connect(db_path) as db:
        db.execute(SCHEMA)
    db.close()
    sink = SQLiteSink(db_path, "events", ("id", "kind", "user_id"))
    bar = progress(count)
    started = time.perf_counter()
    asys, sid = start_system(base)
    try:
        server = Pachka.start(system=asys, sink=sink, name="demo-events",
                              max_batch_size=500, max_batch_delay=0.2)
        single = count // 5
        for i in range(single):
            server.send_message(event(i))
        for first in range(single, count, 1000):
            chunk = [event(i) for i in range(first, min(first + 1000, count))]
            accepted = server.send_messages(chunk)
            assert accepted == len(chunk), f"overloaded: {accepted} of {len(chunk)} accepted"
            bar.show(delivered(db_path))
        deadline = time.monotonic() + DELIVERY_WAIT
        while (done := delivered(db_path)) < count and time.monotonic() < deadline:
            bar.show(done)
            time.sleep(0.05)
        server.stop()
        bar.show(delivered(db_path))
    finally:
        bar.close()
        killed = shutdown_system(asys, sid)
    elapsed = time.perf_counter() - started
    with sqlite3.connect(db_path) as db:
        ids = [row[0] for row in db.execute("select id from events order by seq")]
    db.close()
    left = session_pids(sid) if sid is not None else []
    print(f"delivered:  {len(ids)} of {count} messages")
    print(f"in order:   {ids == list(range(count))}")
    print(f"time:       {elapsed:.2f} s including actor system start and shutdown")
    print(f"processes:  {len(left)} left behind ({len(killed)} needed a kill after shutdown)")
    return 0 if ids == list(range(count)) and not left and not killed else 1
