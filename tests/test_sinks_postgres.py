"""`PostgresSink` against a real PostgreSQL: the DSN comes from PACHKA_TEST_POSTGRES_DSN.

Without it the tests that need a server skip, unless PACHKA_REQUIRE_POSTGRES=1
(CI sets both), which turns the skip into a failure.
"""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from sinks import wait_for
from table_sinks import RetryLog, fire_when, retries
from thespian.actors import ActorSystem

from pachka_actors import ConfigError, Pachka
from pachka_actors.messages import State, TimerKind
from pachka_actors.sink import Batch, DrainingSink
from pachka_actors.sinks import PermanentSinkError, SchemaError

DSN_VARIABLE = "PACHKA_TEST_POSTGRES_DSN"


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail when the run promised a PostgreSQL (PACHKA_REQUIRE_POSTGRES=1)."""
    if os.environ.get("PACHKA_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{reason}, and PACHKA_REQUIRE_POSTGRES=1", pytrace=False)
    pytest.skip(reason)


try:
    import psycopg
    from psycopg import conninfo

    from pachka_actors.sinks.postgres import PostgresSink

    # The docs' example; its module is imported before any actor process forks.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    postgres_sink_example = importlib.import_module("postgres_sink")
except ImportError:
    if os.environ.get("PACHKA_REQUIRE_POSTGRES") == "1":
        raise
    pytest.skip("psycopg is not installed: pip install 'pachka_actors[postgres]'",
                allow_module_level=True)


class RecordingPostgresSink(RetryLog, PostgresSink):
    """A PostgresSink that logs its retries (see table_sinks.RetryLog)."""


@pytest.fixture
def dsn() -> str:
    value = os.environ.get(DSN_VARIABLE)
    if not value:
        unavailable(f"{DSN_VARIABLE} is not set: no PostgreSQL to test against")
    return value


@pytest.fixture
def table(dsn: str) -> Iterator[str]:
    """A new table `events_<random>` (id primary key, kind not null, "order"), dropped after."""
    name = f"events_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(f'create table {name} (id integer primary key, kind text not null, '
                   f'"order" integer)')
    yield name
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(f"drop table {name}")


COLUMNS = ("id", "kind", "order")


def rows(dsn: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as db:
        return db.execute(f"select id, kind, \"order\" from {table} order by id").fetchall()


def event(i: int) -> dict[str, Any]:
    return {"id": i, "kind": "login", "order": i * 10}


# ---- without a server -----------------------------------------------------------------------


def test_importing_the_sinks_package_does_not_import_psycopg() -> None:
    code = "import sys, pachka_actors.sinks; print('psycopg' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_import_without_psycopg_names_the_extra() -> None:
    code = ("import sys; sys.modules['psycopg'] = None\n"   # as if it were not installed
            "import pachka_actors.sinks.postgres")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert "ImportError: pachka_actors.sinks.postgres needs psycopg 3: " \
           "pip install 'pachka_actors[postgres]'" in result.stderr


@pytest.mark.parametrize(("args", "option"), [
    (("", "events", COLUMNS), "dsn"),
    (("host='unterminated", "events", COLUMNS), "dsn"),
    (("dbname=x", "events; drop table events", COLUMNS), "table"),
    (("dbname=x", "events", ("id", 'kind"')), "columns"),
])
def test_bad_configuration_is_refused_at_construction(args: tuple[Any, ...],
                                                      option: str) -> None:
    with pytest.raises(ConfigError) as raised:
        PostgresSink(*args)
    assert raised.value.option == option


def test_copy_statement_quotes_the_checked_names() -> None:
    sink = PostgresSink("dbname=x", "public.events", COLUMNS)
    assert isinstance(sink, DrainingSink)
    assert sink.copy_statement().as_string() == \
        'copy "public"."events" ("id", "kind", "order") from stdin'


# ---- against the server ---------------------------------------------------------------------


def test_batches_are_copied_on_one_kept_connection(dsn: str, table: str) -> None:
    sink = PostgresSink(dsn, table, COLUMNS)
    try:
        sink.send_batch([event(1), (2, "page_view", None)], None)
        backend = sink.connection().info.backend_pid
        sink.send_batch([[3, "purchase", 30]], None)
        assert sink.connection().info.backend_pid == backend   # no reconnect per batch
        copy = pickle.loads(pickle.dumps(sink))
        assert copy._connection is None and sink._connection is not None   # never pickled
        assert rows(dsn, table) == [(1, "login", 10), (2, "page_view", None), (3, "purchase", 30)]
    finally:
        sink.close()


@pytest.mark.parametrize(("message", "code"), [
    (event(1), "23505"),             # unique_violation: already in the table
    ((5, None, 50), "23502"),        # not_null_violation
    ((5, "login", "fifty"), "22P02"),  # invalid_text_representation
    ((5, {"a": 1}, 50), None),       # psycopg cannot adapt a dict
])
def test_data_errors_are_permanent_and_roll_back_the_batch(dsn: str, table: str, message: Any,
                                                           code: str | None) -> None:
    sink = PostgresSink(dsn, table, COLUMNS)
    try:
        sink.send_batch([event(1)], None)
        with pytest.raises(PermanentSinkError) as raised:
            sink.send_batch([event(2), event(3), message], None)
        assert raised.value.code == code
        assert rows(dsn, table) == [(1, "login", 10)]    # nothing of the failed batch
        sink.send_batch([event(2)], None)                # the connection is still good
        assert len(rows(dsn, table)) == 2
    finally:
        sink.close()


def test_missing_table_is_a_schema_error_not_bad_data(dsn: str) -> None:
    sink = PostgresSink(dsn, "no_such_table", COLUMNS)
    try:
        with pytest.raises(SchemaError) as raised:
            sink.send_batch([event(1)], None)
        assert (raised.value.error_type, raised.value.code) == ("UndefinedTable", "42P01")
    finally:
        sink.close()


def test_connection_errors_are_raised_as_they_are(tmp_path: Path) -> None:
    sink = PostgresSink(f"host={tmp_path} port=5433 dbname=x", "events", COLUMNS)
    with pytest.raises(psycopg.OperationalError) as raised:   # no server on that socket
        sink.send_batch([event(1)], None)
    assert not isinstance(raised.value, PermanentSinkError)
    assert sink.retry_timeout(3, raised.value, None) == 3.0   # Pachka's linear wait
    assert sink.retry_timeout(3, SchemaError("x"), None) == 8.0
    assert type(pickle.loads(pickle.dumps(raised.value))) is psycopg.OperationalError


def test_drain_copies_everything_in_one_transaction(dsn: str, table: str) -> None:
    sink = PostgresSink(dsn, table, COLUMNS)
    try:
        with pytest.raises(PermanentSinkError):
            sink.drain_on_terminate([event(i) for i in range(1000)] + [(0, None, 0)], 100, None)
        assert rows(dsn, table) == []
        sink.drain_on_terminate([event(i) for i in range(1000)], 100, None)
        assert len(rows(dsn, table)) == 1000
    finally:
        sink.close()


# ---- through a Pachka server on multiprocTCPBase ------------------------------------------------


def test_batches_reach_the_table_in_order(dsn: str, table: str,
                                          tcp_system: ActorSystem) -> None:
    server = Pachka.start(system=tcp_system, sink=PostgresSink(dsn, table, COLUMNS),
                          max_batch_size=5, timers="manual")
    assert server.send_messages([event(i) for i in range(12)]) == 12
    wait_for(lambda: len(rows(dsn, table)) == 10)      # two full batches
    fire_when(tcp_system, server, State.IDLE, TimerKind.BATCH)
    wait_for(lambda: len(rows(dsn, table)) == 12)
    server.send_messages([(i, "page_view", i) for i in range(12, 15)])
    server.stop()                                      # drain_on_terminate takes these three
    assert rows(dsn, table) == [(i, "login", i * 10) for i in range(12)] + [
        (i, "page_view", i) for i in range(12, 15)]


def test_unreachable_server_is_retried_until_it_answers(dsn: str, table: str, tmp_path: Path,
                                                        tcp_system: ActorSystem) -> None:
    params = conninfo.conninfo_to_dict(dsn)
    socket_dir = str(params.get("host") or "")
    if not socket_dir.startswith("/"):
        pytest.skip("the DSN's host is not a Unix socket directory, which this test redirects")
    port = str(params.get("port") or 5432)
    hidden = tmp_path / "socket"
    hidden.mkdir()                                     # no PostgreSQL socket in there yet
    sink = RecordingPostgresSink(conninfo.make_conninfo(dsn, host=str(hidden)), table, COLUMNS)
    server = Pachka.start(system=tcp_system, sink=sink, max_batch_size=3, timers="manual",
                          server_value=str(tmp_path))
    server.send_messages([event(i) for i in range(3)])
    fire_when(tcp_system, server, State.RETRY_BACKOFF, TimerKind.RETRY)
    wait_for(lambda: len(retries(tmp_path)) == 2)
    assert retries(tmp_path) == [{"retry_num": n, "type": "OperationalError", "code": None,
                                  "delay": float(n)} for n in (1, 2)]
    (hidden / f".s.PGSQL.{port}").symlink_to(Path(socket_dir, f".s.PGSQL.{port}"))
    fire_when(tcp_system, server, State.RETRY_BACKOFF, TimerKind.RETRY)   # the server is back
    wait_for(lambda: len(rows(dsn, table)) == 3)
    server.stop()
    assert rows(dsn, table) == [(i, "login", i * 10) for i in range(3)]


def test_missing_column_backs_off_and_is_retried_once_added(dsn: str, table: str,
                                                             tmp_path: Path,
                                                             tcp_system: ActorSystem) -> None:
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(f'alter table {table} drop column "order"')
    server = Pachka.start(system=tcp_system, sink=RecordingPostgresSink(dsn, table, COLUMNS),
                          max_batch_size=5, timers="manual", server_value=str(tmp_path))
    server.send_messages([event(i) for i in range(5)])   # no column "order": the batch fails
    fire_when(tcp_system, server, State.RETRY_BACKOFF, TimerKind.RETRY)
    wait_for(lambda: len(retries(tmp_path)) == 2)
    assert retries(tmp_path) == [{"retry_num": n, "type": "SchemaError", "code": "42703",
                                  "delay": 2.0 ** n} for n in (1, 2)]
    with psycopg.connect(dsn, autocommit=True) as db:    # someone fixes the table
        db.execute(f'alter table {table} add column "order" integer')
    fire_when(tcp_system, server, State.RETRY_BACKOFF, TimerKind.RETRY)
    wait_for(lambda: len(rows(dsn, table)) == 5)
    assert server.stats().dead_lettered == 0
    server.stop()
    assert rows(dsn, table) == [(i, "login", i * 10) for i in range(5)]


def test_ledger_and_dead_letter_table(dsn: str, table: str) -> None:
    """A batch already in the ledger is skipped (also part by part in the drain); a dead
    letter lands in its table once, whatever the retries."""
    ledger, dead = f"{table}_ledger", f"{table}_dead"
    sink = PostgresSink(dsn, table, COLUMNS, ledger=ledger, dead_letter_table=dead)
    try:
        sink.send_batch(Batch([event(1), event(2)], "b1"), None)
        sink.send_batch(Batch([event(1), event(2)], "b1"), None)   # a retry after a kill
        sink.drain_on_terminate(Batch([event(1), event(2), event(3)], "b3",
                                      (("b1", 2), ("b2", 1))), 100, None)
        bad = Batch([(9, None, 0)], "b4.x")
        sink.dead_letter(bad, PermanentSinkError("not null"), None)
        sink.dead_letter(bad, PermanentSinkError("not null"), None)
        assert rows(dsn, table) == [(1, "login", 10), (2, "login", 20), (3, "login", 30)]
        with psycopg.connect(dsn, autocommit=True) as db:
            assert db.execute(f"select batch_id, message, error from {dead}").fetchall() == [
                ("b4.x", "[9, null, 0]", "not null")]
            db.execute(f"drop table {ledger}, {dead}")
    finally:
        sink.close()


def test_the_docs_example(dsn: str, tcp_system: ActorSystem) -> None:
    table = f"example_{uuid.uuid4().hex[:12]}"
    try:
        rows = postgres_sink_example.run(tcp_system, dsn, table)
    finally:
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute(f"drop table if exists {table}")
    assert rows == [(1, "login", 7)] + [(i, "page_view", 7) for i in range(2, 251)]
