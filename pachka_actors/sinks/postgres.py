"""`PostgresSink`: batches into a PostgreSQL table with COPY (needs the `postgres` extra)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    import psycopg
    from psycopg import conninfo, sql
except ImportError as exc:  # pragma: no cover - exercised by a test that hides psycopg
    raise ImportError("pachka_actors.sinks.postgres needs psycopg 3: "
                      "pip install 'pachka_actors[postgres]'") from exc

from ..errors import ConfigError, PermanentSinkError
from .table import TableSink

__all__ = ["PermanentSinkError", "PostgresSink"]

# Errors the same rows will meet again: bad values, constraints, a missing table or
# column, a type psycopg cannot adapt. Anything else (OperationalError: the server is
# down, restarting, out of connections; InterfaceError: the connection broke) may pass.
_PERMANENT = (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError,
              psycopg.NotSupportedError)


class PostgresSink(TableSink["psycopg.Connection[Any]"]):
    """Writes each batch with one COPY in one transaction, about 4x faster than INSERTs.

    `dsn` is a libpq connection string or URI ("dbname=app host=/run/postgresql").
    The connection opens in `setup` and serves every batch of an exporter
    (`TableSink`).
    Failures are classified: a connection or server error is raised as it is,
    so the batch is retried at Pachka's linear pace (`TableSink.retry_timeout`);
    a data or schema error is raised as `PermanentSinkError` (with the SQLSTATE
    as `code`) and retried with an exponential backoff until the data or the
    table is fixed. Messages and table: see `TableSink`.
    """

    def __init__(self, dsn: str, table: str, columns: Sequence[str], *,
                 max_retry_timeout: float = 60.0) -> None:
        super().__init__(table, columns, max_retry_timeout=max_retry_timeout)
        if not isinstance(dsn, str) or not dsn:
            raise ConfigError("dsn", f"a libpq connection string or URI, got {dsn!r}")
        try:
            conninfo.conninfo_to_dict(dsn)  # checks the syntax, connects to nothing
        except psycopg.ProgrammingError as exc:
            raise ConfigError("dsn", str(exc).strip()) from None
        self.dsn = dsn

    def write(self, messages: list[Any]) -> None:
        """COPY `messages` in one transaction; data errors raise `PermanentSinkError`."""
        rows = self.rows(messages)
        connection = self.connection()
        try:
            with connection.transaction(), connection.cursor() as cursor, \
                    cursor.copy(self.copy_statement()) as copy:
                for row in rows:
                    copy.write_row(row)
        except _PERMANENT as exc:
            raise PermanentSinkError(f"{type(exc).__name__}: {exc}", type(exc).__name__,
                                     exc.sqlstate) from exc
        except psycopg.Error:
            self.close()  # whatever broke, the next batch starts from a new connection
            raise

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True)

    def copy_statement(self) -> sql.Composed:
        """COPY into the checked table and columns, quoted by psycopg."""
        return sql.SQL("copy {} ({}) from stdin").format(
            sql.Identifier(*self.table_parts),
            sql.SQL(", ").join(sql.Identifier(column) for column in self.columns))
