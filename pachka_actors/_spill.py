"""The spill file: accepted messages a server could not deliver in time, kept for the next one.

An SQLite file (stdlib) holding pickled batches in order, each with its id (so a
ledger knows a batch a killed export had committed). Written in one transaction
when `shutdown_timeout` passes at exit; read and emptied in one transaction when
a server starts with the same `spill_path`, which then sends them ahead of
anything new.
"""

from __future__ import annotations

import logging
import os
import pickle
import sqlite3
from contextlib import closing

from .errors import plural
from .sink import Batch

log = logging.getLogger(__name__)

_SCHEMA = "create table if not exists spill (seq integer primary key autoincrement, " \
          "message blob not null)"


def write(path: str, batches: list[Batch]) -> None:
    """Append `batches` (one row each: its pickle keeps its id and kind), all or none."""
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(_SCHEMA)
        db.executemany("insert into spill (message) values (?)",
                       [(pickle.dumps(batch),) for batch in batches])


def take(path: str) -> list[Batch]:
    """Every spilled batch, in order, removed from the file in the same transaction. A row
    of the format before batch ids (one message) becomes a batch of one, without an id."""
    if not os.path.exists(path):
        return []
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(_SCHEMA)
        rows = db.execute("select message from spill order by seq").fetchall()
        db.execute("delete from spill")
    loaded = [pickle.loads(row[0]) for row in rows]
    return [item if isinstance(item, Batch) else Batch([item]) for item in loaded]


def keep(server: str, path: str | None, batches: list[Batch], why: str) -> None:
    """Never silent: spilled (WARNING, where and how many) or lost (ERROR, how many)."""
    assert path is not None
    count = sum(map(len, batches))
    try:
        write(path, batches)
    except Exception as exc:
        log.error("Pachka %s: %s lost: %s, and writing them to %s failed: %r",
                  server, plural(count, "accepted message"), why, path, exc)
    else:
        log.warning("Pachka %s: %s spilled to %s (%s); a server started with "
                    "that spill_path sends them first", server, plural(count, "accepted message"),
                    path, why)
