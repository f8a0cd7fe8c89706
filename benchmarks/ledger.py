"""What the ready sinks' `ledger=` costs: 10,000 rows in batches of 500, written with
the sink's own `send_batch` (no actors), with and without a ledger; median of 5.

`python -m benchmarks.ledger` (SQLite; PostgreSQL too when PACHKA_TEST_POSTGRES_DSN
is set). Each line: the sink, ms without, ms with, and the ratio.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from pachka_actors.sink import Batch
from pachka_actors.sinks import SQLiteSink, TableSink

MESSAGES, BATCH, REPS = 10_000, 500, 5
COLUMNS = ("id", "kind", "n")


def timed(make: Callable[[str | None], TableSink[Any]], ledger: str | None) -> float:
    sink = make(ledger)
    try:
        start = time.perf_counter()
        for first in range(0, MESSAGES, BATCH):
            sink.send_batch(Batch([(i, "login", i) for i in range(first, first + BATCH)],
                                  f"b{first}"), None)
        return (time.perf_counter() - start) * 1000
    finally:
        sink.close()


def compare(name: str, make: Callable[[str | None], TableSink[Any]]) -> None:
    times: dict[str | None, list[float]] = {None: [], "ledger": []}
    for rep in range(REPS):  # alternated, so that a noisy neighbour hits both alike
        for ledger in (None, "ledger") if rep % 2 else ("ledger", None):
            times[ledger].append(timed(make, ledger))
    runs = {ledger: statistics.median(values) for ledger, values in times.items()}
    print(f"{name}: {runs[None]:.1f} ms without a ledger, {runs['ledger']:.1f} ms with "
          f"({runs['ledger'] / runs[None]:.2f}x)")


def sqlite_sink(directory: str) -> Callable[[str | None], TableSink[Any]]:
    def make(ledger: str | None) -> TableSink[Any]:
        path = os.path.join(directory, f"{uuid.uuid4().hex}.db")
        with sqlite3.connect(path) as db:
            db.execute("create table t (id integer primary key, kind text, n integer)")
        db.close()
        return SQLiteSink(path, "t", COLUMNS, ledger=ledger)
    return make


def postgres_sink(dsn: str, created: list[str]) -> Callable[[str | None], TableSink[Any]]:
    import psycopg

    from pachka_actors.sinks.postgres import PostgresSink

    def make(ledger: str | None) -> TableSink[Any]:
        table = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute(f"create table {table} (id integer primary key, kind text, n integer)")
        created.extend((table, f"{table}_ledger"))
        return PostgresSink(dsn, table, COLUMNS,
                            ledger=None if ledger is None else f"{table}_ledger")
    return make


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.2f}; {MESSAGES} rows, batches of {BATCH}")
    with tempfile.TemporaryDirectory() as directory:
        compare("SQLiteSink", sqlite_sink(directory))
    dsn = os.environ.get("PACHKA_TEST_POSTGRES_DSN")
    if dsn:
        import psycopg

        created: list[str] = []
        try:
            compare("PostgresSink", postgres_sink(dsn, created))
        finally:
            with psycopg.connect(dsn, autocommit=True) as db:
                db.execute(f"drop table if exists {', '.join(created)}")


if __name__ == "__main__":
    main()
