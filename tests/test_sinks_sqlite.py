"""`SQLiteSink`: its callbacks called directly, then through a real server on multiprocTCPBase."""

from __future__ import annotations

import importlib
import json
import pickle
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from sinks import wait_for
from table_sinks import RetryLog, fire_when, retries
from thespian.actors import ActorSystem

from pachka_actors import ConfigError, Pachka
from pachka_actors.messages import State, TimerKind
from pachka_actors.sink import Batch, DrainingSink
from pachka_actors.sinks import PermanentSinkError, SchemaError, SQLiteSink

# The docs' example; its module is imported before any actor process forks.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
sqlite_sink_example = importlib.import_module("sqlite_sink")

SCHEMA = 'create table events (id integer primary key, kind text not null, "order" integer)'
COLUMNS = ("id", "kind", "order")


class RecordingSQLiteSink(RetryLog, SQLiteSink):
    """An SQLiteSink that logs its retries (see table_sinks.RetryLog)."""


def new_db(directory: Path) -> str:
    path = str(directory / "events.sqlite3")
    with sqlite3.connect(path) as db:
        db.execute(SCHEMA)
    db.close()
    return path


def rows(path: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        found = db.execute('select id, kind, "order" from events order by id').fetchall()
    db.close()
    return found


def event(i: int) -> dict[str, Any]:
    return {"id": i, "kind": "login", "order": i * 10, "ignored": "extra keys are"}


# ---- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize(("table", "columns", "option"), [
    ("events; drop table events", COLUMNS, "table"),
    ('ev"ents', COLUMNS, "table"),
    ("1events", COLUMNS, "table"),
    ("", COLUMNS, "table"),
    ("a.b.c", COLUMNS, "table"),
    ("x" * 64, COLUMNS, "table"),
    (None, COLUMNS, "table"),
    ("events", (), "columns"),
    ("events", "id", "columns"),
    ("events", ("id", "id"), "columns"),
    ("events", ("id", "kind) values (1, 2); --"), "columns"),
    ("events", ("id", 3), "columns"),
])
def test_bad_names_are_refused_at_construction(tmp_path: Path, table: Any, columns: Any,
                                               option: str) -> None:
    with pytest.raises(ConfigError) as raised:
        SQLiteSink(tmp_path / "x.sqlite3", table, columns)
    assert raised.value.option == option


@pytest.mark.parametrize(("option", "value"), [
    ("on_conflict", "skip"), ("timeout", 0), ("timeout", "5"), ("max_retry_timeout", True),
    ("max_retry_timeout", -1.0),
])
def test_bad_options_are_refused_at_construction(tmp_path: Path, option: str,
                                                 value: Any) -> None:
    with pytest.raises(ConfigError) as raised:
        SQLiteSink(tmp_path / "x.sqlite3", "events", COLUMNS, **{option: value})
    assert raised.value.option == option


def test_names_are_quoted_and_schema_qualified(tmp_path: Path) -> None:
    sink = SQLiteSink(tmp_path / "x.sqlite3", "main.events", COLUMNS, on_conflict="ignore")
    assert sink.insert == ('insert or ignore into "main"."events" ("id", "kind", "order") '
                           "values (?, ?, ?)")


def test_pickles_and_drains() -> None:
    sink = SQLiteSink("x.sqlite3", "events", COLUMNS)
    assert isinstance(sink, DrainingSink)
    assert pickle.loads(pickle.dumps(sink)).__dict__ == sink.__dict__


# ---- send_batch and drain_on_terminate, called directly ----------------------------------------


def test_mappings_and_sequences_in_one_batch(tmp_path: Path) -> None:
    path = new_db(tmp_path)
    sink = SQLiteSink(path, "events", COLUMNS)
    sink.send_batch([event(1), (2, "page_view", None), [3, "purchase", 30]], None)
    assert rows(path) == [(1, "login", 10), (2, "page_view", None), (3, "purchase", 30)]


@pytest.mark.parametrize(("message", "error_type"), [
    ({"id": 9, "kind": "login"}, "KeyError"),    # no "order" key
    ((9, "login"), "TypeError"),                 # too short
    ("9,login,90", "TypeError"),                 # a string is not a row
    (9, "TypeError"),
])
def test_badly_shaped_message_fails_the_batch_permanently(tmp_path: Path, message: Any,
                                                          error_type: str) -> None:
    path = new_db(tmp_path)
    with pytest.raises(PermanentSinkError) as raised:
        SQLiteSink(path, "events", COLUMNS).send_batch([event(1), message], None)
    assert raised.value.error_type == error_type
    assert "message 1 of the batch" in str(raised.value)
    assert rows(path) == []


@pytest.mark.parametrize(("message", "code"), [
    (event(1), "SQLITE_CONSTRAINT_PRIMARYKEY"),   # already in the table
    ((5, None, 50), "SQLITE_CONSTRAINT_NOTNULL"),
    ((5, {"a": 1}, 50), None),                    # sqlite3 cannot bind a dict
])
def test_data_errors_are_permanent_and_roll_back_the_batch(tmp_path: Path, message: Any,
                                                           code: str | None) -> None:
    path = new_db(tmp_path)
    sink = SQLiteSink(path, "events", COLUMNS)
    sink.send_batch([event(1)], None)
    with pytest.raises(PermanentSinkError) as raised:
        sink.send_batch([event(2), event(3), message], None)
    assert raised.value.code == code
    assert rows(path) == [(1, "login", 10)]          # nothing of the failed batch
    copy = pickle.loads(pickle.dumps(raised.value))   # it crosses from exporter to server
    assert (type(copy), str(copy), copy.error_type, copy.code) == (
        PermanentSinkError, str(raised.value), raised.value.error_type, code)


def test_missing_table_is_a_schema_error_not_bad_data(tmp_path: Path) -> None:
    """No message is at fault: none must be dead-lettered (a PermanentSinkError would be)."""
    with pytest.raises(SchemaError) as raised:
        SQLiteSink(tmp_path / "empty.sqlite3", "events", COLUMNS).send_batch([event(1)], None)
    assert (raised.value.error_type, raised.value.code) == ("OperationalError", "SQLITE_ERROR")
    copy = pickle.loads(pickle.dumps(raised.value))
    assert (type(copy), copy.error_type, copy.code) == (SchemaError, "OperationalError",
                                                        "SQLITE_ERROR")


def test_badly_shaped_messages_are_named_by_index(tmp_path: Path) -> None:
    """The server then isolates exactly those, without splitting the batch in halves."""
    with pytest.raises(PermanentSinkError) as raised:
        SQLiteSink(new_db(tmp_path), "events", COLUMNS).send_batch(
            [event(1), 7, event(2), {"id": 3}], None)
    assert raised.value.indices == (1, 3)
    assert "(and 1 more)" in str(raised.value)


def test_ledger_skips_a_batch_it_has_and_the_drain_skips_part_by_part(tmp_path: Path) -> None:
    path = new_db(tmp_path)
    sink = SQLiteSink(path, "events", COLUMNS, ledger="batches")
    sink.send_batch(Batch([event(1), event(2)], "b1"), None)
    sink.send_batch(Batch([event(1), event(2)], "b1"), None)   # retried after a kill: skipped
    sink.drain_on_terminate(Batch([event(1), event(2), event(3)], "b3",
                                  (("b1", 2), ("b2", 1))), 100, None)
    assert rows(path) == [(1, "login", 10), (2, "login", 20), (3, "login", 30)]
    with sqlite3.connect(path) as db:
        assert sorted(db.execute("select batch_id from batches")) == [("b1",), ("b2",)]
    db.close()


def test_without_a_batch_id_the_ledger_writes_as_usual(tmp_path: Path) -> None:
    path = new_db(tmp_path)
    SQLiteSink(path, "events", COLUMNS, ledger="batches").send_batch([event(1)], None)
    assert rows(path) == [(1, "login", 10)]


def test_a_failed_batch_leaves_no_ledger_entry(tmp_path: Path) -> None:
    path = new_db(tmp_path)
    sink = SQLiteSink(path, "events", COLUMNS, ledger="batches")
    with pytest.raises(PermanentSinkError):
        sink.send_batch(Batch([event(1), (1, None, 0)], "b1"), None)
    sink.send_batch(Batch([event(1)], "b1"), None)   # the same id, now good: written
    assert rows(path) == [(1, "login", 10)]


def test_dead_letter_table_keeps_messages_and_error(tmp_path: Path) -> None:
    path = new_db(tmp_path)
    sink = SQLiteSink(path, "events", COLUMNS, dead_letter_table="dead", ledger="batches")
    bad = Batch([{"id": None, "kind": "x", "order": 1}, (2, {1, 2}, 3)], "b4.x")
    sink.dead_letter(bad, PermanentSinkError("NOT NULL"), None)
    sink.dead_letter(bad, PermanentSinkError("NOT NULL"), None)   # again: under the ledger
    with sqlite3.connect(path) as db:
        found = db.execute("select batch_id, message, error from dead order by rowid").fetchall()
    db.close()
    assert found == [("b4.x", '{"id": null, "kind": "x", "order": 1}', "NOT NULL"),
                     ("b4.x", '[2, "{1, 2}", 3]', "NOT NULL")]


def test_locked_database_is_transient(tmp_path: Path) -> None:
    path = new_db(tmp_path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("begin immediate")   # another writer holds the lock
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            SQLiteSink(path, "events", COLUMNS, timeout=0.05).send_batch([event(1)], None)
    finally:
        holder.close()
    assert rows(path) == []


def test_on_conflict_ignore_makes_redelivery_harmless(tmp_path: Path) -> None:
    path = new_db(tmp_path)
    sink = SQLiteSink(path, "events", COLUMNS, on_conflict="ignore")
    sink.send_batch([event(1), event(2)], None)
    sink.send_batch([event(1), event(2)], None)   # the same batch again (at-least-once)
    assert rows(path) == [(1, "login", 10), (2, "login", 20)]


def test_drain_writes_everything_in_one_transaction(tmp_path: Path) -> None:
    path = new_db(tmp_path)
    sink = SQLiteSink(path, "events", COLUMNS)
    with pytest.raises(PermanentSinkError):
        sink.drain_on_terminate([event(i) for i in range(1000)] + [(0, None, 0)], 100, None)
    assert rows(path) == []
    sink.drain_on_terminate([event(i) for i in range(1000)], 100, None)
    assert len(rows(path)) == 1000


def test_one_connection_from_setup_to_teardown(tmp_path: Path) -> None:
    path = new_db(tmp_path)
    sink = SQLiteSink(path, "events", COLUMNS)
    sink.setup(None)
    connection = sink.connection()
    sink.send_batch([event(1)], None)
    sink.send_batch([event(2)], None)
    assert sink.connection() is connection                   # kept across batches
    assert pickle.loads(pickle.dumps(sink))._connection is None   # never pickled
    sink.teardown(None)
    assert sink._connection is None
    sink.send_batch([event(3)], None)   # a shared instance (simpleSystemBase) reopens it
    sink.teardown(None)
    assert rows(path) == [(i, "login", i * 10) for i in (1, 2, 3)]


def test_retry_timeout_is_linear_for_transient_and_exponential_for_schema() -> None:
    sink = SQLiteSink("x.sqlite3", "events", COLUMNS, max_retry_timeout=20)
    transient = sqlite3.OperationalError("database is locked")
    schema = SchemaError("no such table: events", "OperationalError")
    assert [sink.retry_timeout(n, transient, None) for n in (1, 2, 3, 30)] == [1, 2, 3, 20]
    assert [sink.retry_timeout(n, schema, None) for n in (1, 2, 3, 10**6)] == [2, 4, 8, 20]
    assert sink.retry_timeout(1, "killed", None) == 1


# ---- through a Pachka server on multiprocTCPBase ------------------------------------------------


@pytest.mark.parametrize("batches_per_exporter", [1, None])
def test_batches_reach_the_table_in_order(tcp_system: ActorSystem, tmp_path: Path,
                                          batches_per_exporter: int | None) -> None:
    path = new_db(tmp_path)
    server = Pachka.start(system=tcp_system, sink=SQLiteSink(path, "events", COLUMNS),
                          max_batch_size=5, timers="manual",
                          batches_per_exporter=batches_per_exporter)
    assert server.send_messages([event(i) for i in range(12)]) == 12
    wait_for(lambda: len(rows(path)) == 10)           # two full batches
    fire_when(tcp_system, server, State.IDLE, TimerKind.BATCH)
    wait_for(lambda: len(rows(path)) == 12)
    server.send_messages([(i, "page_view", i) for i in range(12, 15)])
    server.stop()                                     # drain_on_terminate takes these three
    assert rows(path) == [(i, "login", i * 10) for i in range(12)] + [
        (i, "page_view", i) for i in range(12, 15)]


def test_missing_table_backs_off_and_is_retried_once_created(tcp_system: ActorSystem,
                                                              tmp_path: Path) -> None:
    path = str(tmp_path / "events.sqlite3")
    server = Pachka.start(system=tcp_system, sink=RecordingSQLiteSink(path, "events", COLUMNS),
                          max_batch_size=5, timers="manual", server_value=str(tmp_path))
    server.send_messages([event(i) for i in range(5)])   # no table yet: the batch fails
    fire_when(tcp_system, server, State.RETRY_BACKOFF, TimerKind.RETRY)
    wait_for(lambda: len(retries(tmp_path)) == 2)
    assert retries(tmp_path) == [
        {"retry_num": n, "type": "SchemaError", "code": "SQLITE_ERROR",
         "delay": 2.0 ** n} for n in (1, 2)]
    new_db(tmp_path)                                     # someone creates the table
    fire_when(tcp_system, server, State.RETRY_BACKOFF, TimerKind.RETRY)
    wait_for(lambda: len(rows(path)) == 5)
    assert rows(path) == [(i, "login", i * 10) for i in range(5)]
    assert server.stats().dead_lettered == 0
    server.stop()


def test_a_duplicate_row_is_dead_lettered_and_the_rest_written(tcp_system: ActorSystem,
                                                               tmp_path: Path) -> None:
    path = new_db(tmp_path)
    SQLiteSink(path, "events", COLUMNS).send_batch([(3, "stale", 0)], None)
    sink = SQLiteSink(path, "events", COLUMNS, dead_letter_table="dead")
    with Pachka.start(system=tcp_system, sink=sink, max_batch_size=5) as server:
        server.send_messages([event(i) for i in range(5)])   # 3 is taken
        wait_for(lambda: server.stats().dead_lettered == 1)
    assert rows(path) == [(0, "login", 0), (1, "login", 10), (2, "login", 20), (3, "stale", 0),
                          (4, "login", 40)]
    with sqlite3.connect(path) as db:
        found = db.execute("select message from dead").fetchall()
    db.close()
    assert [json.loads(m) for (m,) in found] == [event(3)]


def test_the_docs_example(tcp_system: ActorSystem, tmp_path: Path) -> None:
    rows = sqlite_sink_example.run(tcp_system, str(tmp_path / "events.sqlite3"))
    assert rows == [(1, "login", 7)] + [(i, "page_view", 7) for i in range(2, 251)]
