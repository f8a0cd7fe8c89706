"""`SQLiteSink`: events batched into a table of an SQLite file (see docs/ready-sinks.md).

Run it with `python examples/sqlite_sink.py`; tests/test_sinks_sqlite.py runs `run`.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from thespian.actors import ActorSystem

from pachka_actors import Pachka
from pachka_actors.sinks import SQLiteSink
from pachka_actors.systems import isolated_system


def run(asys: ActorSystem, path: str) -> list[tuple[Any, ...]]:
    """Send 250 events through a server into `path`; the rows, by id."""
    # [start:example] shown in docs/ready-sinks.md
    with sqlite3.connect(path) as db:  # the sink writes into a table that exists
        db.execute("create table if not exists events "
                   "(id integer primary key, kind text not null, user_id integer)")
    db.close()

    sink = SQLiteSink(path, "events", ["id", "kind", "user_id"], on_conflict="ignore")
    server = Pachka.start(system=asys, sink=sink, max_batch_size=100, max_batch_delay=0.5)
    server.send_message({"id": 1, "kind": "login", "user_id": 7})       # a mapping...
    server.send_messages([(i, "page_view", 7) for i in range(2, 251)])  # ...or rows in order
    server.stop()  # what is left goes in one transaction (drain_on_terminate)
    # [end:example]
    with sqlite3.connect(path) as db:
        rows = db.execute("select id, kind, user_id from events order by id").fetchall()
    db.close()
    return rows


if __name__ == "__main__":
    with isolated_system() as asys:
        rows = run(asys, str(Path(tempfile.mkdtemp(prefix="pachka-")) / "events.sqlite3"))
    print(f"{len(rows)} rows, ids {rows[0][0]}..{rows[-1][0]}")
