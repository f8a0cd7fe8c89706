"""Goal 1: Pachka's own benchmark (benchmarks/sqlite.ex), 10,000 posts into SQLite.

Four ways to write the same rows: a commit per row, a hand-written loop of
`executemany` per batch, and pachka_actors used as a user would (start a server,
`send_message` each post from this process, `stop()`; start and stop timed), with
the default options and with the documented throughput settings (`_harness.THROUGHPUT`).
SQLite runs with Python's defaults (rollback journal, synchronous=FULL), so a
commit costs a real fsync, as it does for a user who changes nothing.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from thespian.actors import ActorSystem

from pachka_actors import Pachka

from . import _harness
from ._harness import BenchmarkError, Row, Sizes, actor_system, interleave, median, scratch_dir
from ._sinks import RecordingSink, make_messages, verify

PREFIX = "Post "
CREATE = ("create table posts (id integer primary key, title text, "
          "inserted_at text, updated_at text)")
INSERT = "insert into posts (title, inserted_at, updated_at) values (?, ?, ?)"


def rows(titles: Iterable[str]) -> list[tuple[str, str, str]]:
    """Rows stamped with one time, as Pachka's sink does with its `:now` placeholder."""
    now = datetime.now(UTC).isoformat()
    return [(title, now, now) for title in titles]


class SQLiteSink(RecordingSink):
    """Pachka's benchmark sink: one `executemany` and commit per batch (plus the batch log),
    on a connection opened in `setup`, as a user would: one per exporter."""

    _db: sqlite3.Connection | None = None

    def __init__(self, db_path: str, log_path: str) -> None:
        super().__init__(log_path, PREFIX)
        self.db_path = db_path

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_db"}

    def setup(self, server_value: Any) -> None:
        self.db()

    def teardown(self, server_value: Any) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def db(self) -> sqlite3.Connection:
        """The connection; opened again after a teardown (exporters under simpleSystemBase
        share one instance)."""
        if self._db is None:
            self._db = sqlite3.connect(self.db_path, check_same_thread=False)
        return self._db

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        db = self.db()
        db.executemany(INSERT, rows(messages))
        db.commit()
        self.record(messages)


def new_db(directory: str, name: str) -> str:
    path = os.path.join(directory, f"{name}.sqlite3")
    with sqlite3.connect(path) as db:
        db.execute(CREATE)
    return path


def check_db(path: str, count: int) -> None:
    """Every title exactly once, in insertion order."""
    db = sqlite3.connect(path)
    try:
        titles = [title for (title,) in db.execute("select title from posts order by id")]
    finally:
        db.close()
    if titles != make_messages(0, count, PREFIX):
        raise BenchmarkError(f"{path}: {len(titles)} rows, not posts 0..{count - 1} in order")


def single_inserts(path: str, titles: list[str]) -> float:
    start = time.perf_counter()
    db = sqlite3.connect(path)
    for title in titles:
        db.execute(INSERT, rows([title])[0])
        db.commit()
    db.close()
    return time.perf_counter() - start


def hand_batches(path: str, titles: list[str], batch: int) -> float:
    start = time.perf_counter()
    db = sqlite3.connect(path)
    for i in range(0, len(titles), batch):
        db.executemany(INSERT, rows(titles[i:i + batch]))
        db.commit()
    db.close()
    return time.perf_counter() - start


def pachka(asys: ActorSystem, path: str, log: str, titles: list[str], batch: int,
           options: dict[str, Any]) -> float:
    start = time.perf_counter()
    handle = Pachka.start(system=asys, sink=SQLiteSink(path, log), max_batch_size=batch,
                          **options)
    for title in titles:
        handle.send_message(title)
    handle.stop()
    return time.perf_counter() - start


def run(sizes: Sizes) -> list[Row]:
    n, batch = sizes.sqlite_messages, sizes.sqlite_batch
    titles = make_messages(0, n, PREFIX)
    with scratch_dir() as tmp, actor_system() as asys:
        counter = iter(range(10**9))

        def timed(kind: str) -> float:
            rep = next(counter)
            path = new_db(tmp, f"{kind}-{rep}")
            log = os.path.join(tmp, f"{kind}-{rep}.log")
            if kind == "single":
                elapsed = single_inserts(path, titles)
            elif kind == "batch":
                elapsed = hand_batches(path, titles, batch)
            else:
                options = _harness.THROUGHPUT if kind == "throughput" else {}
                elapsed = pachka(asys, path, log, titles, batch, options)
                verify(log, n, batch)
            check_db(path, n)
            return elapsed

        single, hand, ours, fast = interleave(
            sizes.reps, lambda: timed("single"), lambda: timed("batch"),
            lambda: timed("pachka"), lambda: timed("throughput"))
    t_single, t_hand, t_ours, t_fast = median(single), median(hand), median(ours), median(fast)
    rate, fast_rate = n / t_ours, n / t_fast
    settings = _harness.describe(_harness.THROUGHPUT)
    return [
        Row(1, f"SQLite {n:,} posts: pachka_actors ({settings}) vs hand executemany/{batch}",
            t_fast, "s",
            "hand batch loop", t_hand, t_fast / t_hand, "<= 2.0x", t_fast / t_hand <= 2.0,
            f"pachka {fast_rate:,.0f} msg/s",
            (("single insert+commit", n / t_single), (f"hand executemany/{batch}", n / t_hand),
             ("pachka_actors, defaults", rate), ("pachka_actors, throughput settings",
                                                 fast_rate))),
        Row(1, f"SQLite {n:,} posts: pachka_actors (defaults) vs hand executemany/{batch}",
            t_ours, "s", "hand batch loop", t_hand, t_ours / t_hand, "", None,
            f"pachka {rate:,.0f} msg/s"),
        Row(1, f"SQLite {n:,} posts: single insert+commit vs pachka_actors (defaults)",
            t_single, "s", "pachka_actors", t_ours, t_single / t_ours, ">= 50x faster",
            t_single / t_ours >= 50, f"single {n / t_single:,.0f} msg/s"),
    ]
