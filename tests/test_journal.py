"""journal_path: what a server acknowledged survives its process (issue 19)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from journal_sinks import ServerPidSink
from sinks import RecordingSink, delivered, wait_for
from support import (
    bare_exit_during_an_outage,
    process_gone,
    restart_after_the_outage,
    touch,
)
from thespian.actors import ActorSystem

from pachka_actors import ConfigError, Overloaded, Pachka, Supervisor, _ask, _journal
from pachka_actors.core import (
    Delivered,
    DrainDone,
    ExportDone,
    MessagesReceived,
    PachkaCore,
    Queued,
    StartExport,
    StopRequested,
)
from pachka_actors.errors import PermanentSinkError
from pachka_actors.messages import RESTARTING, Accepted, RequestCredit, SendMessages


def core(notes: bool = True, **options: object) -> PachkaCore:
    settings: dict[str, object] = {"max_batch_size": 3, "critical_queue_size": 100,
                                   "max_batch_delay": 1.0, "export_timeout": None,
                                   "drains": False, "spills": True, "batch_prefix": "p-",
                                   **options}
    return PachkaCore(**settings, notes=[] if notes else None)  # type: ignore[arg-type]


def journal(path: Path) -> _journal.Journal:
    return _journal.Journal.open(str(path), "always", None, "new-0")


def test_replay_rebuilds_what_was_held_with_batch_ids_in_order(tmp_path: Path) -> None:
    """Delivered batches are gone; the batch in flight keeps its id; a split batch goes on
    as its parts; queued messages in no batch yet come last, as one batch."""
    machine, path = core(), tmp_path / "j"
    written = journal(path)
    effects = machine.handle(MessagesReceived(list(range(8))))
    written.record(machine.take_notes())
    [first] = [e for e in effects if isinstance(e, StartExport)]
    effects = machine.handle(ExportDone(first.export_id))  # p-1 delivered, p-2 starts
    written.record(machine.take_notes())
    [second] = [e for e in effects if isinstance(e, StartExport)]
    effects = machine.handle(ExportDone(second.export_id, PermanentSinkError("bad", indices=[1])))
    written.record(machine.take_notes())
    [third] = [e for e in effects if isinstance(e, StartExport)]
    written.close()  # as a kill: the records are in the file
    assert [list(b) for b in (first.batch, second.batch, third.batch)] == [
        [0, 1, 2], [3, 4, 5], [3, 5]]
    reread = journal(path)
    try:
        held = list(reread.live.batches.values())
        assert [(b.id, list(b)) for b in held] == [
            ("p-2.r", [3, 5]), ("p-2.x", [4]), ("new-0", [6, 7])]
        assert reread.torn is None
    finally:
        reread.close()


def test_notes_only_with_a_journal() -> None:
    machine = core(notes=False)
    machine.handle(MessagesReceived([1, 2, 3]))
    assert machine.notes is None and machine.take_notes() == []


def test_a_drain_checkpoints_every_batch_it_took() -> None:
    machine = core(drains=True, max_batch_size=2)
    machine.handle(MessagesReceived([1, 2, 3]))
    machine.take_notes()
    machine.handle(ExportDone(machine.export_id or 0))  # [1, 2] delivered
    machine.handle(StopRequested())
    machine.handle(DrainDone())
    assert [n for n in machine.take_notes() if isinstance(n, Delivered)] == [
        Delivered(("p-1",)), Delivered(("p-2",))]


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from pachka_actors import _journal
    from pachka_actors.core import Formed, Queued
    from pachka_actors.sink import Batch

    journal = _journal.Journal.open(sys.argv[1], "always", None, "old-0")
    journal.record([Queued([1, 2, 3])])
    journal.record([Formed(Batch([1, 2], "old-1")), Queued([4])])
    real = os.write
    def torn(fd, data):  # half of the next record, then the process dies
        real(fd, bytes(data)[:len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    os.write = torn
    journal.record([Queued(list(range(100, 200)))])
""")


def test_a_write_torn_by_a_kill_loses_only_its_own_record(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture,
                                                          simple_system: ActorSystem) -> None:
    path = tmp_path / "j"
    died = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], check=False)
    assert died.returncode == -9
    reread = journal(path)
    try:
        assert reread.torn is not None and reread.torn.reason == "record cut short"
        assert [(b.id, list(b)) for b in reread.live.batches.values()] == [
            ("old-1", [1, 2]), ("new-0", [3, 4])]
        assert "torn" in caplog.text and f"{reread.torn.dropped} bytes dropped" in caplog.text
    finally:
        reread.close()
    # A server on it sends them first, under their ids; the torn record is gone for good.
    server = Pachka.start(system=simple_system, sink=RecordingSink(tmp_path),
                          journal_path=str(path), max_batch_size=2, linger=None)
    server.send_messages([5])
    server.stop()
    assert delivered(tmp_path) == [1, 2, 3, 4, 5]
    assert os.path.getsize(path) == 0  # all delivered: compacted to nothing


def test_a_second_server_on_one_journal_is_refused(simple_system: ActorSystem,
                                                   tmp_path: Path) -> None:
    path = str(tmp_path / "j")
    first = Pachka.start(system=simple_system, sink=RecordingSink(tmp_path), journal_path=path)
    with pytest.raises(ConfigError, match="journal of another server"):
        Pachka.start(system=simple_system, sink=RecordingSink(tmp_path), journal_path=path)
    first.stop()
    Pachka.start(system=simple_system, sink=RecordingSink(tmp_path), journal_path=path).stop()


def test_journal_and_spill_path_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="give one of them"):
        Pachka.start(system=None, sink=RecordingSink(tmp_path),  # refused before any actor
                     journal_path=str(tmp_path / "j"), spill_path=str(tmp_path / "s"))
    with pytest.raises(ConfigError, match="journal_sync"):
        Pachka.start(system=None, sink=RecordingSink(tmp_path), journal_sync=0)


def test_a_journal_path_that_cannot_be_opened_names_the_path(simple_system: ActorSystem,
                                                              tmp_path: Path) -> None:
    path = tmp_path / "a folder"
    path.mkdir()
    with pytest.raises(ConfigError, match=f"cannot open {path} to read and append"):
        Pachka.start(system=simple_system, sink=RecordingSink(tmp_path), journal_path=str(path))


def test_a_full_journal_refuses_new_messages(simple_system: ActorSystem, tmp_path: Path) -> None:
    """`journal_max_bytes`: Overloaded naming the limit, rather than a full disk."""
    touch(tmp_path, "fail")  # nothing is delivered: nothing can be compacted away
    server = Pachka.start(system=simple_system, sink=RecordingSink(tmp_path, retry_seconds=60),
                          journal_path=str(tmp_path / "j"), journal_max_bytes=4096,
                          max_batch_delay=None, linger=None)
    granted = simple_system.ask(server.address, RequestCredit(5), 5)
    start = 0
    while start < 10_000 and server.send_messages([f"message {i}"
                                                   for i in range(start, start + 100)]) == 100:
        start += 100
    assert 0 < start < 1000 and 4096 <= os.path.getsize(tmp_path / "j") < 8192
    with pytest.raises(Overloaded, match="journal is at journal_max_bytes=4096"):
        server.send_message("one more")
    # Promised messages are taken; the next room a shipment asks for is not granted.
    shipped = simple_system.ask(server.address, SendMessages(["promised"], granted.credit,
                                                             ask=5), 5)
    assert shipped == Accepted(1) and server.status().reserved == 0
    os.remove(tmp_path / "fail")
    server.stop()


def test_a_producer_waiting_for_room_in_a_full_journal_gets_it_once_delivery_frees_some(
        simple_system: ActorSystem, tmp_path: Path) -> None:
    """`wait=` waits at the journal's limit as at the queue's: a delivery compacts room."""
    touch(tmp_path, "fail")
    server = Pachka.start(system=simple_system, sink=RecordingSink(tmp_path, retry_seconds=0.1),
                          journal_path=str(tmp_path / "j"), journal_max_bytes=4096,
                          max_batch_size=50, max_batch_delay=None, linger=None)
    sent = 0
    while sent < 10_000 and server.send_messages([f"message {i}"
                                                  for i in range(sent, sent + 10)]) == 10:
        sent += 10
    with pytest.raises(Overloaded, match="journal is at journal_max_bytes=4096"):
        server.send_message("refused")
    os.remove(tmp_path / "fail")  # the next retry delivers
    refused = server.stats().refused_queue_full
    server.send_message("waited", wait=10.0)
    # Refused once (the message itself), then the request for room waited: no busy loop.
    assert server.stats().refused_queue_full == refused + 1
    server.stop()
    assert delivered(tmp_path) == [f"message {i}" for i in range(sent)] + ["waited"]


def test_compaction_keeps_the_file_to_what_is_held(simple_system: ActorSystem, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_journal, "COMPACT_AT", 20_000)
    path = tmp_path / "j"
    server = Pachka.start(system=simple_system, sink=RecordingSink(tmp_path),
                          journal_path=str(path), max_batch_size=50, linger=None)
    sizes = []
    for start in range(0, 5000, 50):
        server.send_messages(list(range(start, start + 50)))
        sizes.append(os.path.getsize(path))
    server.stop()
    assert max(sizes) < 2 * 20_000 and delivered(tmp_path) == list(range(5000))


def test_sigkilled_server_restarted_by_its_supervisor_loses_no_acknowledged_message(
        tcp_system: ActorSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream of acknowledged shipments; the server is SIGKILLed four times, from another
    thread, with messages queued and a batch in flight. Every acknowledged message is a
    row, once (the ledger skips the in-flight batch the old server's exporter had
    committed), in order."""
    monkeypatch.setattr(_ask, "PROBE_AFTER", 0.3)  # a call to the killed server ends soon
    db = str(tmp_path / "rows.db")
    with closing(sqlite3.connect(db)) as connection, connection:
        connection.execute("create table t (i integer not null)")
    sink = ServerPidSink(db, str(tmp_path), seconds=0.01)
    sup = Supervisor.start([Pachka.child_spec(id="pachka", sink=sink, max_batch_size=50,
                                              max_batch_delay=0.05,
                                              journal_path=str(tmp_path / "journal"))],
                           system=tcp_system, ask_timeout=20, max_restarts=10)
    acked: list[int] = []
    killed: list[int] = []
    failed: list[BaseException] = []
    done = threading.Event()

    def killer() -> None:
        try:
            while len(killed) < 4:
                wait_for(lambda: len(acked) >= 1500 * (len(killed) + 1))
                pid = int(wait_for(lambda: (server := tmp_path / "server").exists()
                                   and int(text := server.read_text()) not in killed
                                   and text))  # (written whole: os.replace)
                os.kill(pid, 9)
                killed.append(pid)
        except BaseException as exc:  # the producer below then stops too, not sends forever
            failed.append(exc)
        finally:
            done.set()

    def child() -> object:
        return wait_for(lambda: sup.which_children()[0][1] not in (None, RESTARTING)
                        and sup.which_children()[0][1])

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    handle = Pachka.connect(tcp_system, child(), linger=None)
    sent = 0
    while not done.is_set() or sent < len(acked) + 200:
        chunk = list(range(sent, sent + 20))
        sent += 20
        if handle.send_messages([(i,) for i in chunk]) == len(chunk):
            acked += chunk
        else:  # the server died meanwhile: not acknowledged
            handle = Pachka.connect(tcp_system, child(), linger=None)
    thread.join(5)
    assert not failed and len(killed) == 4 and all(map(process_gone, killed)), failed
    sup.stop()
    with closing(sqlite3.connect(db)) as connection:
        rows = [i for (i,) in connection.execute("select i from t order by rowid")]
    assert not set(acked) - set(rows), f"lost: {sorted(set(acked) - set(rows))[:20]}"
    assert [i for i, n in Counter(rows).items() if n > 1] == []
    assert rows == sorted(rows) and set(rows) <= set(range(sent))


@pytest.mark.parametrize(("policy", "synced", "armed"), [
    ("always", 3, [None, None, None]),
    (60.0, 0, [pytest.approx(60.0, abs=1), None, None]),  # one timer for the tail
    ("os", 0, [None, None, None]),
])
def test_sync_policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: Any,
                       synced: int, armed: list[Any]) -> None:
    syncs: list[int] = []
    monkeypatch.setattr(os, "fdatasync", syncs.append)
    written = _journal.Journal.open(str(tmp_path / "j"), policy, None, "t-0")
    delays = [written.record([Queued([i])]) for i in range(3)]
    assert (len(syncs), delays) == (synced, armed)
    if armed[0] is not None:
        written.timed_sync()  # the timer armed: what was written since is synced, once
        assert len(syncs) == 1
        assert written.record([Queued([3])]) is not None  # the next write arms it again
    written.close()


def test_a_failed_write_is_repaired_by_the_next_one(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A full disk for one step: logged once, and the next step rewrites the file whole,
    so a later start finds every message."""
    written = _journal.Journal.open(str(tmp_path / "j"), "os", None, "t-0")
    real = _journal._write

    def full(fd: int, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_journal, "_write", full)
    written.record([Queued([1])])
    written.record([Queued([2])])
    assert caplog.text.count("writing failed") == 1
    monkeypatch.setattr(_journal, "_write", real)
    written.record([Queued([3])])
    assert not written._broken
    os.close(written._fd)  # as a kill: no compaction at the end
    written._fd = -1
    written.close()
    reread = journal(tmp_path / "j")
    try:
        assert [list(b) for b in reread.live.batches.values()] == [[1, 2, 3]]
    finally:
        reread.close()


def test_what_shutdown_timeout_leaves_stays_in_the_journal(tmp_path: Path) -> None:
    """spill_path's case: a bare exit with the sink down keeps what it held in the journal
    (no spill file), and the next server on it sends that first."""
    path = str(tmp_path / "j")
    bare_exit_during_an_outage(tmp_path, journal_path=path)
    assert os.path.getsize(path) > 0
    restart_after_the_outage(tmp_path, journal_path=path)
    assert os.path.getsize(path) == 0
