"""`SQLiteSink`: batches into a table of an SQLite file, with the standard library only."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import ConfigError, PermanentSinkError, SchemaError
from .table import TableSink, check_seconds

#: `on_conflict` values: SQLite's conflict clauses for INSERT.
ON_CONFLICT = ("abort", "ignore", "replace")

# What the same rows will hit again: data, constraints, values sqlite3 cannot bind.
# SQLITE_ERROR is the schema ("no such table", "no such column"); busy, locked, I/O
# and full disks pass with time.
_PERMANENT = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError,
              sqlite3.InterfaceError)


class SQLiteSink(TableSink[sqlite3.Connection]):
    """Inserts each batch with one `executemany` in one transaction.

    `path` is the database file, opened in `setup` and kept for every batch of an
    exporter (`TableSink`). The table must exist. `on_conflict`
    "ignore" or "replace" makes a batch delivered twice (at-least-once, see the
    sink contract) harmless on a table with a primary key; with "abort", the
    default, a duplicate fails the batch with `PermanentSinkError`. `timeout` is
    how long a write waits for a lock held by another connection. Messages and
    table: see `TableSink`.
    """

    def __init__(self, path: str | os.PathLike[str], table: str, columns: Sequence[str], *,
                 on_conflict: str = "abort", timeout: float = 5.0, ledger: str | None = None,
                 dead_letter_table: str | None = None,
                 max_retry_timeout: float = 60.0) -> None:
        super().__init__(table, columns, ledger=ledger, dead_letter_table=dead_letter_table,
                         max_retry_timeout=max_retry_timeout)
        self.path = os.fspath(path)
        if on_conflict not in ON_CONFLICT:
            raise ConfigError("on_conflict", f"one of {', '.join(ON_CONFLICT)}, "
                                             f"got {on_conflict!r}")
        self.on_conflict = on_conflict
        self.timeout = check_seconds("timeout", timeout)
        self.insert = (f"insert or {on_conflict} into "
                       f"{'.'.join(_quote(part) for part in self.table_parts)} "
                       f"({', '.join(map(_quote, self.columns))}) "
                       f"values ({', '.join('?' * len(self.columns))})")

    @contextmanager
    def transaction(self) -> Iterator[_Transaction]:
        """A transaction, committed if the block ends normally; errors classified."""
        db = self.connection()
        try:
            with db:  # commits on success, rolls back on error
                yield _Transaction(self, db)
        except sqlite3.Error as exc:
            # Errors raised by the sqlite3 module itself (binding a dict) carry no code.
            code = getattr(exc, "sqlite_errorcode", None)
            detail = (f"{type(exc).__name__}: {exc}", type(exc).__name__,
                      getattr(exc, "sqlite_errorname", None))
            if isinstance(exc, _PERMANENT):
                raise PermanentSinkError(*detail) from exc
            if code == sqlite3.SQLITE_ERROR:
                raise SchemaError(*detail) from exc
            self.close()  # busy, locked, I/O: the next batch starts from a new connection
            raise

    def connect(self) -> sqlite3.Connection:
        # Any thread: under simpleSystemBase the exporters run in their caller's threads.
        db = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False)
        with db:
            for statement in self.tables():
                db.execute(statement)
        return db


class _Transaction:
    """SQLite's side of `TableSink.write`."""

    def __init__(self, sink: SQLiteSink, db: sqlite3.Connection) -> None:
        self.sink, self.db = sink, db

    def claim(self, batch_id: str) -> bool:
        return self.db.execute(f'insert or ignore into "{self.sink.ledger}" (batch_id) '
                               f"values (?)", (batch_id,)).rowcount == 1

    def insert(self, dead: bool, rows: list[tuple[Any, ...]]) -> None:
        if dead:
            self.db.executemany(f'insert into "{self.sink.dead_letter_table}" '
                                f"(batch_id, message, error) values (?, ?, ?)", rows)
        else:
            self.db.executemany(self.sink.insert, rows)


def _quote(identifier: str) -> str:
    """Quote a name `check_identifier` accepted (so it holds no quote to escape)."""
    return f'"{identifier}"'
