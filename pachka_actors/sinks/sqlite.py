"""`SQLiteSink`: batches into a table of an SQLite file, with the standard library only."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError, PermanentSinkError
from .table import TableSink, check_seconds

#: `on_conflict` values: SQLite's conflict clauses for INSERT.
ON_CONFLICT = ("abort", "ignore", "replace")

# What the same rows will hit again: data, constraints, the schema (SQLITE_ERROR is
# "no such table" or "no such column"). Busy, locked, I/O and full disks pass with time.
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
                 on_conflict: str = "abort", timeout: float = 5.0,
                 max_retry_timeout: float = 60.0) -> None:
        super().__init__(table, columns, max_retry_timeout=max_retry_timeout)
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

    def write(self, messages: list[Any]) -> None:
        """Insert `messages` in one transaction; data errors raise `PermanentSinkError`."""
        rows = self.rows(messages)
        db = self.connection()
        try:
            with db:  # commits on success, rolls back on error
                db.executemany(self.insert, rows)
        except sqlite3.Error as exc:
            # Errors raised by the sqlite3 module itself (binding a dict) carry no code.
            code = getattr(exc, "sqlite_errorcode", None)
            if isinstance(exc, _PERMANENT) or code == sqlite3.SQLITE_ERROR:
                raise PermanentSinkError(f"{type(exc).__name__}: {exc}", type(exc).__name__,
                                         getattr(exc, "sqlite_errorname", None)) from exc
            self.close()  # busy, locked, I/O: the next batch starts from a new connection
            raise

    def connect(self) -> sqlite3.Connection:
        # Any thread: under simpleSystemBase the exporters run in their caller's threads.
        return sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False)


def _quote(identifier: str) -> str:
    """Quote a name `check_identifier` accepted (so it holds no quote to escape)."""
    return f'"{identifier}"'
