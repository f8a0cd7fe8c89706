"""spill_path: what shutdown_timeout leaves undelivered survives to the next server."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from sinks import RecordingSink, delivered, wait_for
from support import actor_system, touch

from pachka_actors import ConfigError, Pachka
from pachka_actors.core import PachkaCore, Restored, StartExport


def test_a_database_outage_during_a_deploy_loses_nothing(tmp_path: Path) -> None:
    spill = str(tmp_path / "spill.sqlite3")
    touch(tmp_path, "fail")  # the sink is down
    with actor_system("multiprocTCPBase") as first:
        server = Pachka.start(system=first, sink=RecordingSink(tmp_path, retry_seconds=0.05),
                              spill_path=spill, shutdown_timeout=0.5, max_batch_size=3,
                              max_batch_delay=0.01, linger=None)
        assert server.send_messages(list(range(7))) == 7
        wait_for(lambda: server.stats().failures_raised >= 1)
        # leaving the block shuts the system down without stop(): the bare-exit path
    assert delivered(tmp_path) == []
    with sqlite3.connect(spill) as db:
        assert db.execute("select count(*) from spill").fetchone() == (7,)
    db.close()
    os.remove(tmp_path / "fail")  # the database is back
    with actor_system("multiprocTCPBase") as second:
        server = Pachka.start(system=second, sink=RecordingSink(tmp_path), spill_path=spill,
                              max_batch_size=3, linger=None)
        server.send_messages([7, 8])
        server.stop()
    assert delivered(tmp_path) == list(range(9))  # the spilled ones first, in order
    with sqlite3.connect(spill) as db:
        assert db.execute("select count(*) from spill").fetchone() == (0,)
    db.close()


def test_restored_messages_go_first_even_beyond_capacity() -> None:
    core = PachkaCore(max_batch_size=2, critical_queue_size=1, max_batch_delay=None,
                      export_timeout=None, drains=False, spills=True)
    effects = core.handle(Restored([1, 2, 3]))
    assert [e.batch for e in effects if isinstance(e, StartExport)] == [[1, 2]]
    assert list(core.queue) == [3]


def test_spill_path_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        Pachka.start(system=None, sink=RecordingSink(tmp_path),
                     spill_path=str(tmp_path / "nowhere" / "spill.sqlite3"))
    assert error.value.option == "spill_path" and "does not exist" in error.value.problem
