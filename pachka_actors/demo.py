"""The demo: real messages batched into an embedded SQLite file on a multi-process system."""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from typing import Any

from .pachka import Pachka
from .sink import Sink
from .systems import session_pids, shutdown_system, start_system

SCHEMA = """
create table if not exists events (id integer primary key, kind text, user_id integer,
                                   batch_id integer);
create table if not exists batches (id integer primary key autoincrement, size integer,
                                    exporter_pid integer);
"""


class SQLiteSink(Sink):
    """One transaction per batch: the rows and a `batches` row that says who wrote them."""

    def __init__(self, path: str) -> None:
        self.path = path

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        with sqlite3.connect(self.path) as db:  # commits on success, rolls back on error
            cursor = db.execute("insert into batches (size, exporter_pid) values (?, ?)",
                                (len(messages), os.getpid()))
            db.executemany("insert into events (id, kind, user_id, batch_id) values (?, ?, ?, ?)",
                           [(m["id"], m["kind"], m["user_id"], cursor.lastrowid)
                            for m in messages])
        db.close()


def event(i: int) -> dict[str, Any]:
    return {"id": i, "kind": ("login", "page_view", "purchase")[i % 3], "user_id": i % 97}


def run(db_path: str | None = None, count: int = 5000, base: str = "multiprocTCPBase") -> int:
    """Send `count` events (a fifth one by one, the rest in lists), stop, and check the table."""
    if db_path is None:
        db_path = os.path.join(tempfile.mkdtemp(prefix="pachka-demo-"), "events.sqlite3")
    with sqlite3.connect(db_path) as db:
        db.executescript(SCHEMA)
    db.close()
    started = time.perf_counter()
    asys, sid = start_system(base)
    try:
        server = Pachka.start(system=asys, sink=SQLiteSink(db_path), name="demo-events",
                              max_batch_size=500, max_batch_delay=0.2)
        single = count // 5
        for i in range(single):
            server.send_message(event(i))
        for first in range(single, count, 1000):
            chunk = [event(i) for i in range(first, min(first + 1000, count))]
            accepted = server.send_messages(chunk)
            assert accepted == len(chunk), f"overloaded: {accepted} of {len(chunk)} accepted"
        server.stop()
    finally:
        killed = shutdown_system(asys, sid)
    elapsed = time.perf_counter() - started
    with sqlite3.connect(db_path) as db:
        ids = [row[0] for row in db.execute("select id from events order by batch_id, id")]
        sizes = [row[0] for row in db.execute("select size from batches order by id")]
        exporters = db.execute("select count(distinct exporter_pid) from batches").fetchone()[0]
    db.close()
    left = session_pids(sid) if sid is not None else []
    print(f"database:   {db_path}")
    print(f"delivered:  {len(ids)} of {count} messages in {len(sizes)} batches "
          f"(sizes {min(sizes)}..{max(sizes)}), by {exporters} exporter processes")
    print(f"in order:   {ids == list(range(count))}")
    print(f"time:       {elapsed:.2f} s including actor system start and shutdown")
    print(f"processes:  {len(left)} left behind ({len(killed)} needed a kill after shutdown)")
    return 0 if ids == list(range(count)) and not left and not killed else 1
