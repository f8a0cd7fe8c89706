"""Sinks for tests/test_exit_paths.py and tests/test_poison.py (issues 16 and 17).

They run in exporter processes, so they are module-level (picklable) and report
through files in a directory they are given.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from pachka_actors import Sink
from pachka_actors.sinks import PermanentSinkError, SQLiteSink


class SlowCommitSQLiteSink(SQLiteSink):
    """An `SQLiteSink` whose write takes `after_commit` seconds more once committed (the
    acknowledgement of a remote database): an export killed in that window is redone
    although its rows are in, which a primary key then refuses."""

    def __init__(self, path: str | os.PathLike[str], table: str, columns: Sequence[str], *,
                 after_commit: float = 0.5, **options: Any) -> None:
        super().__init__(path, table, columns, **options)
        self.after_commit = after_commit

    def write(self, messages: list[Any], parts: Sequence[tuple[str, int]]) -> None:
        super().write(messages, parts)
        time.sleep(self.after_commit)


class DeadLetterFile:
    """Mixin: `dead_letter` (the decided hook for isolated poison messages) appends the
    messages and the error's type to `<directory>/dead.jsonl`."""

    directory: str

    def dead_letter(self, messages: list[Any], error: BaseException, server_value: Any) -> None:
        line = json.dumps({"messages": list(messages), "error": type(error).__name__}) + "\n"
        with open(os.path.join(self.directory, "dead.jsonl"), "a") as log:
            log.write(line)


def dead_letters(directory: str | Path) -> list[Any]:
    """Every message handed to `DeadLetterFile.dead_letter`, in order."""
    path = Path(directory) / "dead.jsonl"
    if not path.exists():
        return []
    return [m for line in path.read_text().splitlines() for m in json.loads(line)["messages"]]


class BlockingSQLiteSink(DeadLetterFile, SQLiteSink):
    """`send_batch` waits while `<directory>/block` exists (`drain_on_terminate` does not),
    so that a test can keep messages queued until it stops the server; dead letters go
    to `<directory>/dead.jsonl`."""

    def __init__(self, directory: str | Path, path: str | os.PathLike[str], table: str,
                 columns: Sequence[str], **options: Any) -> None:
        super().__init__(path, table, columns, **options)
        self.directory = str(directory)

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        while os.path.exists(os.path.join(self.directory, "block")):
            time.sleep(0.005)
        super().send_batch(messages, server_value)


class PoisonSink(DeadLetterFile, Sink):
    """Fails a batch with `PermanentSinkError` (no indices: the server must find the
    culprits) when it holds a string starting with "bad"; records every delivered batch
    to `<directory>/delivered.jsonl`."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = str(directory)

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        bad = [m for m in messages if isinstance(m, str) and m.startswith("bad")]
        if bad:
            raise PermanentSinkError(f"{len(bad)} bad messages in a batch of {len(messages)}",
                                     "ValueError")
        with open(os.path.join(self.directory, "delivered.jsonl"), "a") as log:
            log.write(json.dumps(list(messages)) + "\n")

    def retry_timeout(self, retry_num: int, failure_reason: Any, server_value: Any) -> float:
        return 0.05


def poison_delivered(directory: str | Path) -> list[Any]:
    path = Path(directory) / "delivered.jsonl"
    if not path.exists():
        return []
    return [m for line in path.read_text().splitlines() for m in json.loads(line)]


class KillAfterCommitSQLiteSink(SQLiteSink):
    """Commits the batch, then, once (while `<directory>/kill` exists: it is claimed by
    renaming), SIGKILLs its own exporter before it can report success: the server
    retries a batch that is already in the table."""

    def __init__(self, directory: str | Path, path: str | os.PathLike[str], table: str,
                 columns: Sequence[str], **options: Any) -> None:
        super().__init__(path, table, columns, **options)
        self.directory = str(directory)

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        super().send_batch(messages, server_value)
        marker = os.path.join(self.directory, "kill")
        try:
            os.rename(marker, marker + "-claimed")  # atomic: one exporter wins
        except FileNotFoundError:
            return
        with open(os.path.join(self.directory, "killed"), "w") as f:
            f.write(json.dumps(list(messages)))
        os.kill(os.getpid(), signal.SIGKILL)


def rows(path: str | Path, query: str) -> list[Any]:
    """The first column of every row `query` returns from the SQLite file at `path`."""
    with closing(sqlite3.connect(path, timeout=10)) as db:
        return [row[0] for row in db.execute(query)]


def create_table(path: str | Path, ddl: str) -> None:
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(ddl)
