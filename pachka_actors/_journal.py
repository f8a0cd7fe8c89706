"""The crash journal (`journal_path`): what a server acknowledged survives its process.

An append-only file of records, each framed by its length and CRC-32, so that a
record torn by a kill in the middle of a write is told from a complete one. The
server writes the core's notes of a step (`PachkaCore.take_notes`) as one write
before it performs the step's effects, so messages are in the file before their
`Accepted` leaves, and a batch's id is before its export starts:

- `("A", messages)`: accepted messages joined the queue, in order;
- `("F", id, n)`: a batch `id` was made of the first `n` queued messages;
- `("B", batch)`: a batch, whole (written by compaction, and at start);
- `("R", id, parts)`: the batch `id` goes on as `parts`;
- `("D", ids)`: those batches are delivered (or dead-lettered, or drained).

Replaying the complete records rebuilds what was accepted and not delivered:
the batches with their ids, in order, then the messages not yet in a batch. A
server started on the file (by hand, or restarted by its supervisor) sends that
first. A write survives the death of the process once `os.write` returned; a
power loss, once synced, which `journal_sync` decides (see `JournalSync`).
Compaction rewrites the live records to a new file when the old one has grown
(`os.replace`, so a crash leaves the old or the new one whole).
"""

from __future__ import annotations

import fcntl
import logging
import os
import pickle
import struct
import time
import zlib
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._core_events import Delivered, Formed, Note, Queued, Replaced
from .config import JournalSync
from .errors import ConfigError
from .sink import Batch

log = logging.getLogger(__name__)

_FRAME = struct.Struct("<II")  # payload length, CRC-32 of the payload
#: The file is compacted once it reaches this size, or twice its size after the last
#: compaction if larger: rewriting costs what is live (at most what the server holds).
COMPACT_AT = 8 << 20

#: Journals this process holds: POSIX locks do not exclude a second holder in the
#: same process (servers on simpleSystemBase share one).
_held: set[str] = set()

Record = tuple[Any, ...]


def frame(record: Record) -> bytes:
    payload = pickle.dumps(record, pickle.HIGHEST_PROTOCOL)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True)
class Torn:
    """Where the complete records end: a record cut short or corrupt, and what follows."""

    offset: int
    dropped: int
    reason: str


def scan(data: bytes) -> tuple[list[Record], Torn | None]:
    """The complete records, up to the first torn or corrupt one (a kill in the middle of a
    write leaves one at the end); nothing after it is trusted."""
    records: list[Record] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _FRAME.size:
            return records, Torn(offset, len(data) - offset, "header cut short")
        size, crc = _FRAME.unpack_from(data, offset)
        payload = data[offset + _FRAME.size:offset + _FRAME.size + size]
        if len(payload) < size:
            return records, Torn(offset, len(data) - offset, "record cut short")
        if zlib.crc32(payload) != crc:
            return records, Torn(offset, len(data) - offset, "bad CRC")
        records.append(pickle.loads(payload))
        offset += _FRAME.size + size
    return records, None


@dataclass
class Live:
    """What the records so far leave accepted and undelivered: the batches (in order, by
    id) and, after them, the queued messages not yet in a batch."""

    batches: dict[str, Batch] = field(default_factory=dict)
    queued: deque[Any] = field(default_factory=deque)

    def apply(self, record: Record) -> None:
        match record:
            case ("A", messages):
                self.queued.extend(messages)
            case ("F", batch_id, count):
                popleft = self.queued.popleft
                self.batches[batch_id] = Batch((popleft() for _ in range(count)), batch_id)
            case ("B", batch):
                self.batches[batch.id] = batch
            case ("R", batch_id, parts):
                if batch_id not in self.batches:
                    raise ValueError(f"batch {batch_id} replaced, but it is not held")
                self.batches = {i: b for old, batch in self.batches.items()
                                for i, b in ([(p.id, p) for p in parts] if old == batch_id
                                             else [(old, batch)])}
            case ("D", batch_ids):
                for batch_id in batch_ids:
                    self.batches.pop(batch_id, None)
            case _:
                raise ValueError(f"not a journal record: {record!r}")

    def records(self) -> list[Record]:
        """The fewest records that rebuild this state."""
        kept: list[Record] = [("B", batch) for batch in self.batches.values()]
        return [*kept, ("A", list(self.queued))] if self.queued else kept

    def batch_queued(self, batch_id: str) -> None:
        """The queued messages become one more batch, `batch_id`, as a new server takes all
        that an earlier one held as batches (`Restored`)."""
        if self.queued:
            self.batches[batch_id] = Batch(self.queued, batch_id)
            self.queued.clear()


def records_of(notes: Iterable[Note]) -> list[Record]:
    records: list[Record] = []
    for note in notes:
        match note:
            case Queued(messages):
                records.append(("A", list(messages)))
            case Formed(batch):
                records.append(("F", batch.id, len(batch)))
            case Replaced(batch_id, parts):
                records.append(("R", batch_id, parts))
            case Delivered(batch_ids):
                records.append(("D", batch_ids))
    return records


class Journal:
    """One server's journal, open for appending, locked against a second server."""

    def __init__(self, path: str, sync: JournalSync, max_bytes: int | None) -> None:
        self.path = path
        self.sync_policy = sync
        self.max_bytes = max_bytes
        self.live = Live()
        self.size = 0
        self.compact_at = COMPACT_AT
        self.torn: Torn | None = None
        self._fd = -1
        self._dirty = False  # written, not yet synced
        self._armed = False  # a timed sync is due (interval policy)
        self._last_sync = 0.0
        self._delivered = False  # something delivered since the last compaction
        self._broken = False  # a write failed: the file is rewritten whole at the next step
        self._lock = _lock(path)

    @classmethod
    def open(cls, path: str, sync: JournalSync, max_bytes: int | None,
             tail_id: str) -> Journal:
        """Lock, read what an earlier server left (reporting a torn record), and rewrite it
        compacted: the torn tail is gone, and what is held is in `live.batches` (messages
        that were in no batch yet in one more, `tail_id`)."""
        journal = cls(path, sync, max_bytes)
        try:
            try:
                with open(path, "rb") as file:
                    data = file.read()
            except FileNotFoundError:
                data = b""
            records, journal.torn = scan(data)
            for record in records:
                journal.live.apply(record)
            journal.live.batch_queued(tail_id)
            if journal.torn is not None:
                log.warning("journal %s: record at byte %d torn (%s): %d bytes dropped, %d "
                            "complete records before it recovered", path, journal.torn.offset,
                            journal.torn.reason, journal.torn.dropped, len(records))
            journal.compact()
        except BaseException:
            journal.close()
            raise
        return journal

    def record(self, notes: Sequence[Note]) -> float | None:
        """Append the notes of a step in one write, synced as the policy says ("always":
        when the step accepted messages, so once per shipment, before its acknowledgement;
        what other steps write is synced with the next). Returns the delay of a timed
        sync to arm (interval policy, none armed yet), else None.

        A write that fails (a full disk, a message that does not pickle on
        simpleSystemBase) is logged at ERROR, once; the file is then rewritten whole
        from `live` at each step until that succeeds, so what it holds stays whole."""
        records = records_of(notes)
        if not records:
            return None
        for record in records:
            self.live.apply(record)
            self._delivered = self._delivered or record[0] == "D"
        try:
            if self._broken or self.size >= self.compact_at:
                self.compact()
                return None
            data = b"".join(map(frame, records))
            _write(self._fd, data)
        except Exception as exc:
            if not self._broken:
                log.error("journal %s: writing failed (%r): what the server accepts is not "
                          "durable until a write succeeds", self.path, exc)
            self._broken = True
            return None
        self.size += len(data)
        self._dirty = True
        if self.sync_policy == "always":
            if any(record[0] == "A" for record in records):  # an acknowledgement waits
                self.sync()
        elif not isinstance(self.sync_policy, str):
            late = time.monotonic() - self._last_sync
            if late >= self.sync_policy:
                self.sync()
            elif not self._armed:
                self._armed = True
                return self.sync_policy - late
        return None

    def timed_sync(self) -> None:
        """The interval policy's timer: sync what was written since."""
        self._armed = False
        self.sync()

    def sync(self) -> None:
        if self._dirty:
            os.fdatasync(self._fd)
            self._dirty = False
        self._last_sync = time.monotonic()

    def full(self) -> str | None:
        """Why new messages are refused (the file is at `journal_max_bytes` even compacted),
        or None."""
        if self.max_bytes is None or self.size < self.max_bytes:
            return None
        if self._delivered:
            self.compact()
        if self.size < self.max_bytes:
            return None
        return f"journal is at journal_max_bytes={self.max_bytes}"

    def compact(self) -> None:
        """Rewrite the live records to a new file and put it in place of the old one."""
        data = b"".join(map(frame, self.live.records()))
        temporary = f"{self.path}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        _sync_directory(self.path)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.size = len(data)
        self.compact_at = max(COMPACT_AT, 2 * self.size)
        self._dirty = self._delivered = self._broken = False
        self._last_sync = time.monotonic()

    def close(self) -> None:
        """Leave the file compacted (empty when all was delivered) and release it and its
        lock (a process that dies releases them too)."""
        if self._fd >= 0:
            try:
                self.compact()
            except Exception as exc:  # the file keeps what it has: read back next time
                log.error("journal %s: compacting at the end failed (%r)", self.path, exc)
            os.close(self._fd)
            self._fd = -1
        if self._lock >= 0:
            os.close(self._lock)
            _held.discard(self.path)
            self._lock = -1


def _lock(path: str) -> int:
    """A POSIX lock on `<path>.lock`, held while the server runs. Not inherited by the
    exporters a server forks, so a supervisor's restart finds it free once the old
    server's process is gone."""
    if path in _held:  # two writers would corrupt it
        raise ConfigError("journal_path", f"{path} is the journal of another server in this "
                                          f"process")
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise ConfigError("journal_path", f"{path} is the journal of another running server "
                                          f"(process {_holder(path)} holds {path}.lock)") from exc
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _held.add(path)
    return fd


def _holder(path: str) -> str:
    try:
        with open(f"{path}.lock") as file:
            return file.read().strip() or "?"
    except OSError:
        return "?"


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _sync_directory(path: str) -> None:
    """The rename itself survives a power loss once its directory is synced."""
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
