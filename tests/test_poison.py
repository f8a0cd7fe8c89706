"""Poison messages and exactly-once batches (issue 17.2): acceptance tests for the redesign.

A batch failing with `PermanentSinkError` is split in halves until the messages
that fail alone are found; the others are delivered in order and the isolated
ones go to `Sink.dead_letter` (counted in `stats().dead_lettered`). A ready sink
with `ledger=` writes each batch's id in the batch's transaction and skips a
batch whose id is there. Each test fails on the code of commit f41d3ea (but one
control, which says so); its docstring says how (observed on a 2-core machine,
load ~1-3).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from exit_sinks import (
    BlockingSQLiteSink,
    KillAfterCommitSQLiteSink,
    PoisonSink,
    create_table,
    dead_letters,
    poison_delivered,
    rows,
)
from sinks import StopDriver, wait_for
from thespian.actors import ActorSystem

from pachka_actors import Batch, Pachka, Sink
from pachka_actors.errors import PermanentSinkError
from pachka_actors.sinks import SQLiteSink

pytestmark = pytest.mark.multiproc

TABLE = "create table t (i integer not null)"
#: Servers of failing tests end fast at teardown (Thespian's own wait is 10 s).
QUICK_EXIT: dict[str, Any] = {"shutdown_timeout": 2}


def dead_lettered(server: Pachka) -> Any:
    """`stats().dead_lettered` (read with getattr: the field is new in the redesign)."""
    return getattr(server.stats(), "dead_lettered", None)


def good_rows(db: Path) -> list[Any]:
    return rows(db, "select i from t order by rowid")  # rowid: the order of insertion


def test_poison_message_is_dead_lettered_and_the_rest_delivered(tcp_system: ActorSystem,
                                                                tmp_path: Path) -> None:
    """5,000 messages to a table whose column is NOT NULL, one of them NULL: no message is
    refused, the 4,999 good ones are rows in order, the bad one is dead-lettered, and
    `stop()` is prompt.

    Today (f41d3ea): the batch holding the NULL (rows 1200-1299) is retried for ever
    with growing backoff, the queue fills, and `send_message` of message 2800 raises
    `Overloaded("queue is at critical_queue_size=2000")`; `stop(timeout=5)` would
    time out (1,200 rows in the table).
    """
    db = tmp_path / "t.db"
    create_table(db, TABLE)
    server = Pachka.start(system=tcp_system, sink=SQLiteSink(db, "t", ["i"]),
                          max_batch_size=100, critical_queue_size=2000, **QUICK_EXIT)
    for n in range(5000):
        server.send_message({"i": None if n == 1234 else n}, wait=30)  # keeps pace
    wait_for(lambda: dead_lettered(server) == 1, 20)
    server.stop(timeout=10)
    assert good_rows(db) == [n for n in range(5000) if n != 1234]


def test_dead_letter_table_keeps_the_poison_message(tcp_system: ActorSystem,
                                                    tmp_path: Path) -> None:
    """`SQLiteSink(dead_letter_table=...)` keeps an isolated message in that table (the
    sink creates it: the test does not know its columns, only that it has one row).

    Today: `TypeError: SQLiteSink.__init__() got an unexpected keyword argument
    'dead_letter_table'`.
    """
    db = tmp_path / "t.db"
    create_table(db, TABLE)
    new_option: dict[str, Any] = {"dead_letter_table": "dead"}
    sink = SQLiteSink(db, "t", ["i"], **new_option)
    server = Pachka.start(system=tcp_system, sink=sink, max_batch_size=10,
                          max_batch_delay=0.02, **QUICK_EXIT)
    assert server.send_messages([{"i": n} for n in range(5)] + [{"i": None}]
                                + [{"i": n} for n in range(5, 10)]) == 11
    server.stop(timeout=10)
    assert good_rows(db) == list(range(10))
    assert rows(db, "select count(*) from dead") == [1]


BAD = {10: "bad-10", 11: "bad-11", 57: "bad-57", 150: "bad-150"}


def test_several_poison_messages_in_one_batch(tcp_system: ActorSystem, tmp_path: Path) -> None:
    """Three bad messages in one batch of 100 (two of them adjacent), one in the next:
    a sink that says only "this batch has bad data" (`PermanentSinkError` without
    indices). Every good message is delivered once, in order; each bad one is
    dead-lettered once.

    Today: the first batch is retried for ever (every 0.05 s), nothing after it is
    delivered: "condition not met within 10 s".
    """
    messages: list[Any] = [BAD.get(n, n) for n in range(300)]
    good = [m for m in messages if isinstance(m, int)]
    server = Pachka.start(system=tcp_system, sink=PoisonSink(tmp_path), max_batch_size=100,
                          max_batch_delay=0.02, **QUICK_EXIT)
    assert server.send_messages(messages) == 300
    wait_for(lambda: len(poison_delivered(tmp_path)) >= len(good), 10)  # today: never
    wait_for(lambda: len(dead_letters(tmp_path)) >= len(BAD), 10)
    assert dead_lettered(server) == len(BAD)
    server.stop(timeout=10)
    assert poison_delivered(tmp_path) == good
    assert sorted(dead_letters(tmp_path)) == sorted(BAD.values())


def test_poison_messages_among_those_drained_at_stop(tcp_system: ActorSystem,
                                                     tmp_path: Path) -> None:
    """`stop()` while 900 messages wait behind a batch in flight: they go to the ready
    sink's `drain_on_terminate` (one transaction), which fails on two NULLs. The drain
    must still end with every good message a row once, in order, the two bad ones
    dead-lettered, and the server stopped.

    Today: "drain_on_terminate failed (PermanentSinkError('IntegrityError: NOT NULL
    constraint failed: t.i')); exporting 900 messages through send_batch instead",
    then the batch holding the NULL is retried for ever and the server never stops:
    "condition not met within 15 s".
    """
    db = tmp_path / "t.db"
    create_table(db, TABLE)
    bad = {300, 701}
    (tmp_path / "block").touch()
    sink = BlockingSQLiteSink(tmp_path, db, "t", ["i"])
    server = Pachka.start(system=tcp_system, sink=sink, max_batch_size=100,
                          max_batch_delay=0.02, **QUICK_EXIT)
    assert server.send_messages([{"i": None if n in bad else n} for n in range(1000)]) == 1000
    wait_for(lambda: server.status().queue_length == 900)  # the first 100 in flight, blocked
    driver = tcp_system.createActor(StopDriver)
    tcp_system.tell(driver, ("stop", server.address))
    wait_for(lambda: server.status().terminating)
    os.remove(tmp_path / "block")
    wait_for(lambda: tcp_system.ask(driver, "stopped?", 5) is True, 15)
    assert good_rows(db) == [n for n in range(1000) if n not in bad]
    assert dead_letters(tmp_path) == [{"i": None}, {"i": None}]


def ledger_sink(tmp_path: Path, db: Path, ledger: str | None) -> KillAfterCommitSQLiteSink:
    options = {} if ledger is None else {"ledger": ledger}
    return KillAfterCommitSQLiteSink(tmp_path, db, "t", ["i"], **options)


def send_with_a_kill_after_commit(system: ActorSystem, tmp_path: Path, db: Path,
                                  ledger: str | None, when: str) -> None:
    """1,000 messages in batches of 100; the exporter of the first batch dies after its
    commit. `when` "running": `stop()` once every message is in (so the killed batch
    went through a retry); "stopping": at once (so it may go through the drain)."""
    create_table(db, TABLE)
    (tmp_path / "kill").touch()
    server = Pachka.start(system=system, sink=ledger_sink(tmp_path, db, ledger),
                          max_batch_size=100, max_batch_delay=0.02, **QUICK_EXIT)
    assert server.send_messages([{"i": n} for n in range(1000)]) == 1000
    if when == "running":
        wait_for(lambda: len(set(good_rows(db))) == 1000, 20)
    server.stop(timeout=20)
    assert (tmp_path / "killed").exists(), "no exporter was killed after its commit"


@pytest.mark.parametrize("when", ["running", "stopping"])
def test_ledger_skips_a_batch_committed_by_a_killed_exporter(tcp_system: ActorSystem,
                                                             tmp_path: Path, when: str) -> None:
    """An exporter SIGKILLed after its commit, before its reply: the server retries the
    batch (same id), the ledger shows it is in, so it is skipped: every row once. With
    `stop()` at once the retry may instead be part of the drain: still every row once.

    Today: `TypeError: SQLiteSink.__init__() got an unexpected keyword argument
    'ledger'` (without a ledger, see the next test, the batch is written twice).
    """
    db = tmp_path / "t.db"
    send_with_a_kill_after_commit(tcp_system, tmp_path, db, "batches", when)
    assert good_rows(db) == list(range(1000))


def test_without_ledger_a_batch_committed_by_a_killed_exporter_is_written_twice(
        tcp_system: ActorSystem, tmp_path: Path) -> None:
    """The control of the test above: at-least-once, as documented, when there is no
    ledger; it shows that the exporter really dies after its commit. Passes today."""
    db = tmp_path / "t.db"
    send_with_a_kill_after_commit(tcp_system, tmp_path, db, None, "running")
    got = good_rows(db)
    assert sorted(set(got)) == list(range(1000))
    assert len(got) == 1100  # the killed batch twice


def test_the_default_dead_letter_logs_one_message_in_words(
        caplog: pytest.LogCaptureFixture) -> None:
    """Poison comes one message at a time: "1 message dead-lettered", not "1 messages"."""
    with caplog.at_level("ERROR", logger="pachka_actors"):
        Sink().dead_letter(Batch(["bad row"]), PermanentSinkError("no"), None)
    assert "1 message dead-lettered (no): 'bad row'" in caplog.text
