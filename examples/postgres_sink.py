"""`PostgresSink`: events batched into a PostgreSQL table with COPY (see docs/ready-sinks.md).

Needs the `postgres` extra. Run it with `python examples/postgres_sink.py DSN`;
tests/test_sinks_postgres.py runs `run` against its test database.
"""

from __future__ import annotations

import sys
from typing import Any

import psycopg
from psycopg import sql
from thespian.actors import ActorSystem

from pachka_actors import Pachka
from pachka_actors.sinks.postgres import PostgresSink
from pachka_actors.systems import isolated_system


def run(asys: ActorSystem, dsn: str, table: str = "events") -> list[tuple[Any, ...]]:
    """Send 250 events through a server into a new `table`; the rows, by id."""
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(sql.SQL("create table {} (id integer primary key, kind text not null, "
                           "user_id integer)").format(sql.Identifier(table)))
    # [start:example] shown in docs/ready-sinks.md
    sink = PostgresSink(dsn, table, ["id", "kind", "user_id"])
    server = Pachka.start(system=asys, sink=sink, max_batch_size=100, max_batch_delay=0.5)
    server.send_message({"id": 1, "kind": "login", "user_id": 7})       # a mapping...
    server.send_messages([(i, "page_view", 7) for i in range(2, 251)])  # ...or rows in order
    server.stop()  # what is left goes in one COPY (drain_on_terminate)
    # [end:example]
    with psycopg.connect(dsn) as db:
        query = sql.SQL("select id, kind, user_id from {} order by id")
        return db.execute(query.format(sql.Identifier(table))).fetchall()


if __name__ == "__main__":
    with isolated_system() as asys:
        rows = run(asys, sys.argv[1])
    print(f"{len(rows)} rows, ids {rows[0][0]}..{rows[-1][0]}")
