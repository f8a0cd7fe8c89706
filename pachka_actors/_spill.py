"""The spill file: accepted messages a server could not deliver in time, kept for the next one.

An SQLite file (stdlib) holding pickled messages in order. Written in one
transaction when `shutdown_timeout` passes at exit; read and emptied in one
transaction when a server starts with the same `spill_path`, which then
queues them ahead of anything new.
"""

from __future__ import annotations

import logging
import os
import pickle
import sqlite3
from contextlib import closing
from typing import Any

log = logging.getLogger(__name__)

_SCHEMA = "create table if not exists spill (seq integer primary key autoincrement, " \
          "message blob not null)"


def write(path: str, messages: list[Any]) -> None:
    """Append `messages`, in order, all or none."""
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(_SCHEMA)
        db.executemany("insert into spill (message) values (?)",
                       [(pickle.dumps(message),) for message in messages])


def take(path: str) -> list[Any]:
    """Every spilled message, in order, removed from the file in the same transaction."""
    if not os.path.exists(path):
        return []
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(_SCHEMA)
        rows = db.execute("select message from spill order by seq").fetchall()
        db.execute("delete from spill")
    return [pickle.loads(row[0]) for row in rows]


def keep(server: str, path: str | None, messages: list[Any], why: str) -> None:
    """Never silent: spilled (WARNING, where and how many) or lost (ERROR, how many)."""
    assert path is not None
    try:
        write(path, messages)
    except Exception as exc:
        log.error("Pachka %s: %d accepted messages lost: %s, and writing them to %s failed: %r",
                  server, len(messages), why, path, exc)
    else:
        log.warning("Pachka %s: %d accepted messages spilled to %s (%s); a server started with "
                    "that spill_path sends them first", server, len(messages), path, why)
