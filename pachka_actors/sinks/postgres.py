"""`PostgresSink`: batches into a PostgreSQL table with COPY (needs the `postgres` extra)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

try:
    import psycopg
    from psycopg import conninfo, sql
except ImportError as exc:  # pragma: no cover - exercised by a test that hides psycopg
    raise ImportError("pachka_actors.sinks.postgres needs psycopg 3: "
                      "pip install 'pachka_actors[postgres]'") from exc

from ..errors import ConfigError, PermanentSinkError, SchemaError
from .table import TableSink

__all__ = ["PermanentSinkError", "PostgresSink", "SchemaError"]

# Errors the same rows will meet again: bad values, constraints, and a value psycopg
# cannot adapt (a ProgrammingError the server never saw: no SQLSTATE). The other
# ProgrammingErrors are the schema: a missing table or column, no permission.
# Anything else (OperationalError: the server is down, restarting, out of connections;
# InterfaceError: the connection broke) may pass.
_DATA = (psycopg.DataError, psycopg.IntegrityError)
_SCHEMA = (psycopg.ProgrammingError, psycopg.NotSupportedError)


class PostgresSink(TableSink["psycopg.Connection[Any]"]):
    """Writes each batch with one COPY in one transaction, about 4x faster than INSERTs.

    `dsn` is a libpq connection string or URI ("dbname=app host=/run/postgresql").
    The connection opens in `setup` and serves every batch of an exporter
    (`TableSink`).
    Failures are classified: a connection or server error is raised as it is,
    so the batch is retried at Pachka's linear pace (`TableSink.retry_timeout`);
    a data error is raised as `PermanentSinkError` (with the SQLSTATE as `code`),
    so the bad messages are isolated and dead-lettered; a schema error as
    `SchemaError`, retried with an exponential backoff until the table is fixed.
    Messages, table, `ledger` and `dead_letter_table`: see `TableSink`.
    """

    def __init__(self, dsn: str, table: str, columns: Sequence[str], *,
                 ledger: str | None = None, dead_letter_table: str | None = None,
                 max_retry_timeout: float = 60.0) -> None:
        super().__init__(table, columns, ledger=ledger, dead_letter_table=dead_letter_table,
                         max_retry_timeout=max_retry_timeout)
        if not isinstance(dsn, str) or not dsn:
            raise ConfigError("dsn", f"a libpq connection string or URI, got {dsn!r}")
        try:
            conninfo.conninfo_to_dict(dsn)  # checks the syntax, connects to nothing
        except psycopg.ProgrammingError as exc:
            raise ConfigError("dsn", str(exc).strip()) from None
        self.dsn = dsn

    @contextmanager
    def transaction(self) -> Iterator[_Transaction]:
        """A transaction, committed if the block ends normally; errors classified."""
        connection = self.connection()
        try:
            with connection.transaction(), connection.cursor() as cursor:
                yield _Transaction(self, cursor)
        except psycopg.Error as exc:
            detail = (f"{type(exc).__name__}: {exc}", type(exc).__name__, exc.sqlstate)
            if isinstance(exc, _DATA) or (isinstance(exc, _SCHEMA) and exc.sqlstate is None):
                raise PermanentSinkError(*detail) from exc
            if isinstance(exc, _SCHEMA):
                raise SchemaError(*detail) from exc
            self.close()  # whatever broke, the next batch starts from a new connection
            raise

    def connect(self) -> psycopg.Connection[Any]:
        connection = psycopg.connect(self.dsn, autocommit=True)
        for statement in self.tables():
            connection.execute(statement.encode())
        return connection

    def copy_statement(self, dead: bool = False) -> sql.Composed:
        """COPY into the checked table and columns (or the dead-letter table), quoted."""
        table, columns = (((str(self.dead_letter_table),), ("batch_id", "message", "error"))
                          if dead else (self.table_parts, self.columns))
        return sql.SQL("copy {} ({}) from stdin").format(
            sql.Identifier(*table),
            sql.SQL(", ").join(sql.Identifier(column) for column in columns))


class _Transaction:
    """PostgreSQL's side of `TableSink.write`."""

    def __init__(self, sink: PostgresSink, cursor: psycopg.Cursor[Any]) -> None:
        self.sink, self.cursor = sink, cursor

    def claim(self, batch_id: str) -> bool:
        self.cursor.execute(sql.SQL("insert into {} (batch_id) values (%s) on conflict do "
                                    "nothing").format(sql.Identifier(str(self.sink.ledger))),
                            (batch_id,))
        return self.cursor.rowcount == 1

    def insert(self, dead: bool, rows: list[tuple[Any, ...]]) -> None:
        with self.cursor.copy(self.sink.copy_statement(dead)) as copy:
            for row in rows:
                copy.write_row(row)
