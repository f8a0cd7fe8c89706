"""What the ready sinks share: a checked table and columns, messages as rows, retry classes."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, Protocol, TypeVar

from ..errors import ConfigError, PermanentSinkError, SchemaError
from ..sink import Batch, FailureReason, Sink


class _Closable(Protocol):
    def close(self) -> None: ...


class Transaction(Protocol):
    """One open transaction of a ready sink's database."""

    def claim(self, batch_id: str) -> bool:
        """Record `batch_id` in the ledger; False if it was there (its rows are in)."""

    def insert(self, dead: bool, rows: list[tuple[Any, ...]]) -> None:
        """Insert `rows` into the table, or into the dead-letter table if `dead`."""


#: The database driver's connection type.
Connection = TypeVar("Connection", bound=_Closable)

# Names are checked, then quoted: nothing the caller passes reaches SQL unchecked.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def check_identifier(option: str, name: object) -> str:
    """`name` if it is a plain SQL identifier (letters, digits, _; at most 63), else ConfigError."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ConfigError(option, f"{name!r} is not a plain SQL identifier (letters, digits "
                                  f"and _, not starting with a digit, at most 63 characters)")
    return name


def check_seconds(option: str, value: object) -> float:
    """`value` as seconds if it is a number > 0, else ConfigError, at once, not in an exporter."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(option, f"seconds > 0, got {value!r}")
    return float(value)


class TableSink(Sink, Generic[Connection]):
    """Base of the ready sinks: one table's columns, messages as rows, a connection per
    exporter, and retry timing.

    `table` is a name or `schema.name`; `columns` the columns to fill, in order.
    Both are checked at construction (`ConfigError`) and quoted in SQL, so they
    match exactly (PostgreSQL folds unquoted names to lower case: pass them so).
    A message is a mapping with a key for every column (other keys are ignored)
    or a sequence (tuple, list) of one value per column, in column order; None
    is NULL. A message of another shape fails its batch with `PermanentSinkError`.

    The connection opens in `setup`, while the exporter waits as a spare, serves
    every batch of that exporter (`batches_per_exporter`) and closes in
    `teardown`. It is never pickled: each copy sent to a process opens its own.
    Under simpleSystemBase the exporters share one instance: a connection closed
    by one exporter's teardown is opened again by the next batch.

    `ledger` names a table (created by the sink: `batch_id text primary key`) in
    which each batch's id (`Batch.id`) is written in the batch's own transaction;
    a batch whose id is there is skipped, so a batch retried after its export was
    killed between its commit and its report is not written twice. The drain
    skips the same way, batch by batch (`Batch.parts`). `dead_letter_table` names
    a table (created by the sink: `batch_id`, `message` as JSON or repr, `error`)
    that keeps the messages Pachka isolated as bad (`Sink.dead_letter`) instead of
    logging them.
    """

    _connection: Connection | None = None

    def __init__(self, table: str, columns: Sequence[str], *, ledger: str | None = None,
                 dead_letter_table: str | None = None,
                 max_retry_timeout: float = 60.0) -> None:
        if not isinstance(table, str):
            raise ConfigError("table", f"a table name is a string, got {table!r}")
        self.table = table
        self.table_parts = tuple(check_identifier("table", part) for part in table.split(".", 1))
        if isinstance(columns, str) or not isinstance(columns, Sequence) or not columns:
            raise ConfigError("columns", f"a non-empty sequence of column names, got {columns!r}")
        self.columns = tuple(check_identifier("columns", column) for column in columns)
        if len(set(self.columns)) != len(self.columns):
            raise ConfigError("columns", f"a column is named twice in {self.columns!r}")
        self.max_retry_timeout = check_seconds("max_retry_timeout", max_retry_timeout)
        self.ledger = None if ledger is None else check_identifier("ledger", ledger)
        self.dead_letter_table = (None if dead_letter_table is None
                                  else check_identifier("dead_letter_table", dead_letter_table))

    def tables(self) -> list[str]:
        """The statements that create the sink's own tables, if they are missing."""
        statements = []
        if self.ledger is not None:
            statements.append(f'create table if not exists "{self.ledger}" '
                              f"(batch_id text primary key)")
        if self.dead_letter_table is not None:
            statements.append(f'create table if not exists "{self.dead_letter_table}" '
                              f"(batch_id text not null, message text not null, "
                              f"error text not null)")
        return statements

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the connection: a socket cannot travel to another process."""
        return {k: v for k, v in self.__dict__.items() if k != "_connection"}

    def setup(self, server_value: Any) -> None:
        """Connect before the first batch, overlapping the export in flight."""
        self.connection()

    def teardown(self, server_value: Any) -> None:
        self.close()

    def connection(self) -> Connection:
        """The cached connection, opened now if there is none or it was closed."""
        if self._connection is None or getattr(self._connection, "closed", False):
            self._connection = self.connect()
        return self._connection

    def connect(self) -> Connection:
        """A new connection to the database."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the cached connection, if any (an exporter's exit closes it anyway)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        """Write the batch in one transaction; nothing of it is written if it fails."""
        batch_id = getattr(messages, "id", "")
        self.write(messages, ((batch_id, len(messages)),) if batch_id else ())

    def drain_on_terminate(self, messages: list[Any], batch_size: int, server_value: Any) -> None:
        """At shutdown, everything still held in one transaction: one commit, not one a batch."""
        self.write(messages, getattr(messages, "parts", ()))

    def dead_letter(self, messages: Batch, error: BaseException, server_value: Any) -> None:
        """Into `dead_letter_table`, if there is one (under the ledger too); else logged."""
        if self.dead_letter_table is None:
            return super().dead_letter(messages, error, server_value)
        rows = [(messages.id, json.dumps(message, default=repr), str(error))
                for message in messages]
        with self.transaction() as transaction:
            if self.ledger is None or not messages.id or transaction.claim(messages.id):
                transaction.insert(True, rows)
        return None

    def write(self, messages: list[Any], parts: Sequence[tuple[str, int]]) -> None:
        """Write `messages` in one transaction, but for the `parts` (batch id, count) already
        in the ledger; data errors raise `PermanentSinkError`, schema errors `SchemaError`."""
        rows = self.rows(messages)
        with self.transaction() as transaction:
            if self.ledger is None or not parts:
                transaction.insert(False, rows)
                return
            kept: list[tuple[Any, ...]] = []
            start = 0
            for batch_id, count in parts:
                if transaction.claim(batch_id):
                    kept += rows[start:start + count]
                start += count
            transaction.insert(False, kept + rows[start:])

    def transaction(self) -> AbstractContextManager[Transaction]:
        """A transaction on the cached connection, committed if the block ends normally."""
        raise NotImplementedError

    def rows(self, messages: list[Any]) -> list[tuple[Any, ...]]:
        """Every message as a tuple in column order; `PermanentSinkError` naming the
        positions (`indices`) of the messages of a bad shape."""
        rows = []
        bad: list[tuple[int, str, str]] = []
        for index, message in enumerate(messages):
            try:
                rows.append(self.row(message))
            except (KeyError, TypeError) as exc:
                bad.append((index, type(exc).__name__, exc.args[0]))
        if bad:
            index, error_type, problem = bad[0]
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise PermanentSinkError(f"message {index} of the batch {problem}{more}", error_type,
                                     indices=[index for index, _, _ in bad])
        return rows

    def row(self, message: Any) -> tuple[Any, ...]:
        """The message as a tuple in column order; KeyError or TypeError saying why not."""
        if isinstance(message, Mapping):
            missing = [column for column in self.columns if column not in message]
            if missing:
                raise KeyError(f"has no key {missing[0]!r}: {message!r:.200}")
            return tuple(message[column] for column in self.columns)
        if (isinstance(message, Sequence) and not isinstance(message, str | bytes)
                and len(message) == len(self.columns)):
            return tuple(message)
        raise TypeError(f"is neither a mapping nor a sequence of {len(self.columns)} "
                        f"values: {message!r:.200}")

    def retry_timeout(self, retry_num: int, failure_reason: FailureReason,
                      server_value: Any) -> float:
        """Pachka's linear wait for what time can cure (a database down, locked or busy);
        an exponential one for a `SchemaError`, which waits for a human. Both are capped
        at `max_retry_timeout`."""
        if isinstance(failure_reason, SchemaError):
            return min(self.max_retry_timeout, 2.0 ** min(retry_num, 60))
        return min(self.max_retry_timeout, float(retry_num))
