"""spill_path: what shutdown_timeout leaves undelivered survives to the next server."""

from __future__ import annotations

import pickle
import sqlite3
from pathlib import Path

import pytest
from sinks import RecordingSink
from support import bare_exit_during_an_outage, restart_after_the_outage

from pachka_actors import ConfigError, Pachka, _spill
from pachka_actors.core import DeadLetters, PachkaCore, Restored, StartExport
from pachka_actors.errors import MessageTooLarge, PermanentSinkError
from pachka_actors.sink import Batch


def test_a_database_outage_during_a_deploy_loses_nothing(tmp_path: Path) -> None:
    spill = str(tmp_path / "spill.sqlite3")
    bare_exit_during_an_outage(tmp_path, spill_path=spill)
    with sqlite3.connect(spill) as db:   # batches of 3, each a row, with its id
        kept = [pickle.loads(row) for (row,) in db.execute("select message from spill")]
    db.close()
    assert [list(batch) for batch in kept] == [[0, 1, 2], [3, 4, 5], [6]]
    assert all(batch.id for batch in kept)
    restart_after_the_outage(tmp_path, spill_path=spill)
    with sqlite3.connect(spill) as db:
        assert db.execute("select count(*) from spill").fetchone() == (0,)
    db.close()


def test_restored_batches_go_first_under_their_ids_even_beyond_capacity() -> None:
    core = PachkaCore(max_batch_size=2, critical_queue_size=1, max_batch_delay=None,
                      export_timeout=None, drains=False, spills=True)
    effects = core.handle(Restored([Batch([1, 2], "old-1"), Batch([3, 4, 5], "old-2")]))
    assert [(e.batch, e.batch.id) for e in effects if isinstance(e, StartExport)] == [
        ([1, 2], "old-1")]
    # Longer than max_batch_size now: in parts, with ids derived from its own.
    assert [(list(b), b.id) for b in core.pending] == [([3, 4], "old-2.0"), ([5], "old-2.1")]


def test_restored_batches_keep_under_max_batch_bytes_now() -> None:
    """Spilled under a larger `max_batch_bytes`: in parts under today's, and a message now
    larger than a batch goes to `dead_letter`, never to `send_batch`; dead letters stay
    whole."""
    core = PachkaCore(max_batch_size=10, critical_queue_size=10, max_batch_delay=None,
                      export_timeout=None, drains=False, max_batch_bytes=5)
    dead = DeadLetters(Batch(["x" * 9, "y"], "old-0.x"), PermanentSinkError("bad"))
    core.handle(Restored([dead, Batch(["aaaa", "bb", "c", "dddddd"], "old-1")],
                         [[9, 1], [4, 2, 1, 6]]))
    assert [(list(b), b.id, type(b)) for b in core.pending] == [
        (["aaaa"], "old-1.0", Batch), (["bb", "c"], "old-1.1", Batch),
        (["dddddd"], "old-1.2", DeadLetters)]
    letter = core.pending[-1]
    assert isinstance(letter, DeadLetters) and isinstance(letter.error, MessageTooLarge)
    assert (letter.error.size, letter.error.limit) == (6, 5)
    assert list(core.batch) == ["x" * 9, "y"] and core.batch is dead  # exported first


def test_spilled_batches_keep_their_ids_and_kinds(tmp_path: Path) -> None:
    """So that a ledger skips a spilled batch a killed export had committed."""
    path = str(tmp_path / "spill.sqlite3")
    dead = DeadLetters(Batch(["bad"], "b2.x"), PermanentSinkError("bad"))
    _spill.write(path, [Batch([1, 2], "b1"), dead])
    restored = _spill.take(path)
    assert [(list(b), b.id, type(b)) for b in restored] == [
        ([1, 2], "b1", Batch), (["bad"], "b2.x", DeadLetters)]
    assert _spill.take(path) == []     # emptied


def test_spill_path_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        Pachka.start(system=None, sink=RecordingSink(tmp_path),
                     spill_path=str(tmp_path / "nowhere" / "spill.sqlite3"))
    assert error.value.option == "spill_path" and "does not exist" in error.value.problem
