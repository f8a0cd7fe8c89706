"""A sink for the fault matrix (tests/test_fault_matrix.py) and an external producer.

`FaultSink` misbehaves on every `every`-th attempt (counted across processes) in
the way its `fault` names, and records each batch it delivers durably: one file
per batch, written and renamed *before* `send_batch` returns, numbered in the
order delivered, with the exporter's pid and parent (the server). A process
killed after that rename may have its batch delivered again: the only source
of duplicates a test may allow.

Poison messages (strings starting with "bad") fail a batch with
`PermanentSinkError`; `dead_letter` records them as `dead` records.
`KillAfterCommit` wraps a ready sink and SIGKILLs its exporter right after
every `every`-th commit.

Run as a script, it is a producer in a process of its own:
`python fault_sinks.py ADMIN_PORT SERVER_NAME FIRST COUNT OUT` sends ids
`FIRST .. FIRST+COUNT-1` one by one with `send_message` and writes the ids it
saw accepted to OUT as JSON.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pachka_actors import Sink
from pachka_actors.errors import PermanentSinkError
from pachka_actors.sink import Batch

if TYPE_CHECKING:  # exporters unpickling a FaultSink need not import the ready sinks
    from pachka_actors.sinks import TableSink

#: What a faulting attempt does.
FAULTS = ("none", "raise", "return", "down", "hang", "exit", "victim", "slow", "block")


class FaultSink(Sink):
    """`fault` on every `every`-th attempt, counting from the first (attempt 0 faults).

    - raise / return: raise, or return, a `ConnectionError`;
    - down: fail (raise) while the file `down` exists, on every attempt;
    - hang: sleep for an hour (for `export_timeout` to end it);
    - exit: `os._exit(3)`;
    - victim: write `victim-<pid>` and sleep, for the test to SIGKILL from outside;
    - slow: every attempt sleeps `slow` seconds, then delivers;
    - block: every attempt waits while the file `block` exists, then delivers.

    Once the file `heal` exists no attempt faults (tests end a stalled case with it).
    An attempt that did not fault fails with `PermanentSinkError` when the batch holds
    poison messages, naming their positions if `indices`.
    """

    def __init__(self, directory: str | Path, fault: str = "none", every: int = 3,
                 slow: float = 0.0, retry_seconds: float = 0.02, indices: bool = False) -> None:
        assert fault in FAULTS, fault
        self.directory = str(directory)
        self.fault = fault
        self.every = every
        self.slow = slow
        self.retry_seconds = retry_seconds
        self.indices = indices

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def send_batch(self, messages: list[Any], server_value: Any) -> BaseException | None:
        attempt = claim(self.directory, "attempt", {"pid": os.getpid(), "ids": _ids(messages)})
        faulting = attempt % self.every == 0 and not os.path.exists(self._path("heal"))
        if self.fault == "down" and os.path.exists(self._path("down")):
            raise ConnectionError("sink down")
        if self.fault == "slow":
            time.sleep(self.slow)
        if self.fault == "block":
            while os.path.exists(self._path("block")):
                time.sleep(0.005)
        if faulting:
            if self.fault == "raise":
                raise ConnectionError(f"attempt {attempt} fails by request")
            if self.fault == "return":
                return ConnectionError(f"attempt {attempt} fails by request")
            if self.fault == "hang":
                time.sleep(3600)
            if self.fault == "exit":
                os._exit(3)
            if self.fault == "victim":
                Path(self._path(f"victim-{os.getpid()}")).touch()
                time.sleep(3600)
        bad = [i for i, message in enumerate(messages) if is_poison(message)]
        if bad:
            raise PermanentSinkError(f"{len(bad)} poison messages in {len(messages)}",
                                     "ValueError", indices=bad if self.indices else None)
        claim(self.directory, "batch", {"pid": os.getpid(), "ppid": os.getppid(),
                                        "messages": messages})
        return None

    def retry_timeout(self, retry_num: int, failure_reason: Any, server_value: Any) -> float:
        claim(self.directory, "retry", {"retry_num": retry_num, "reason": repr(failure_reason)})
        return self.retry_seconds

    def dead_letter(self, messages: Batch, error: BaseException, server_value: Any) -> None:
        claim(self.directory, "dead", {"id": messages.id, "messages": list(messages),
                                       "error": type(error).__name__})


class DrainingFaultSink(FaultSink):
    """Also has `drain_on_terminate`, recorded like a delivered batch; it fails with
    `PermanentSinkError` (recorded as `drain-failed`) when it holds poison messages."""

    def drain_on_terminate(self, messages: list[Any], batch_size: int, server_value: Any) -> None:
        if any(map(is_poison, messages)):
            claim(self.directory, "drain-failed", {"messages": messages})
            raise PermanentSinkError("poison messages in the drain", "ValueError")
        claim(self.directory, "batch", {"pid": os.getpid(), "ppid": os.getppid(),
                                        "messages": messages, "drained": True})


class KillAfterCommit(Sink):
    """Wraps a ready sink: after every `every`-th batch or dead letter it committed (counted
    across processes, from the first), SIGKILLs its exporter before it can report success,
    so the server exports the same batch id again. Records each `commit` and each kill
    (`killed`) with the batch id; no kill once the file `heal` exists."""

    def __init__(self, sink: TableSink[Any], directory: str | Path, every: int) -> None:
        self.sink = sink
        self.directory = str(directory)
        self.every = every

    def setup(self, server_value: Any) -> None:
        self.sink.setup(server_value)

    def teardown(self, server_value: Any) -> None:
        self.sink.teardown(server_value)

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        self.sink.send_batch(messages, server_value)
        self._committed(messages)

    def dead_letter(self, messages: Batch, error: BaseException, server_value: Any) -> None:
        self.sink.dead_letter(messages, error, server_value)
        self._committed(messages)

    def drain_on_terminate(self, messages: list[Any], batch_size: int, server_value: Any) -> None:
        """In the server's process: never killed."""
        self.sink.drain_on_terminate(messages, batch_size, server_value)

    def retry_timeout(self, retry_num: int, failure_reason: Any, server_value: Any) -> float:
        return 0.02

    def _committed(self, messages: list[Any]) -> None:
        batch_id = getattr(messages, "id", "")
        number = claim(self.directory, "commit", batch_id)
        if number % self.every or os.path.exists(os.path.join(self.directory, "heal")):
            return
        claim(self.directory, "killed", batch_id)
        os.kill(os.getpid(), signal.SIGKILL)


def is_poison(message: Any) -> bool:
    return isinstance(message, str) and message.startswith("bad")


class Custom:
    """A module-level class: travels between processes by pickle."""

    def __init__(self, payload: Any) -> None:
        self.payload = payload

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Custom) and other.payload == self.payload

    def __repr__(self) -> str:
        return f"Custom({self.payload!r})"


def _ids(messages: list[Any]) -> list[Any]:
    return [m for m in messages if isinstance(m, int)][:3]


def claim(directory: str, kind: str, value: Any) -> int:
    """Store `value` as the next numbered `kind` record; atomic across processes."""
    number = len(records_paths(directory, kind))
    while True:
        try:
            fd = os.open(os.path.join(directory, f"{kind}-{number:09d}"),
                         os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            number += 1
            continue
        break
    os.close(fd)
    temporary = os.path.join(directory, f".{kind}-{number:09d}.tmp")
    with open(temporary, "wb") as f:
        f.write(pickle.dumps(value))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, os.path.join(directory, f"{kind}-{number:09d}"))
    return number


def records_paths(directory: str | Path, kind: str) -> list[Path]:
    return sorted(Path(directory).glob(f"{kind}-*"))


def records(directory: str | Path, kind: str) -> list[Any]:
    """Every complete `kind` record, in order (a claimed, not yet written one is skipped)."""
    out = []
    for path in records_paths(directory, kind):
        data = path.read_bytes()
        if data:
            out.append(pickle.loads(data))
    return out


def delivered(directory: str | Path) -> list[Any]:
    """Every message recorded as delivered (or drained), in delivery order, with repeats."""
    return [m for batch in records(directory, "batch") for m in batch["messages"]]


def dead(directory: str | Path) -> list[Any]:
    """Every message handed to `FaultSink.dead_letter`, in order, with repeats."""
    return [m for letter in records(directory, "dead") for m in letter["messages"]]


def victims(directory: str | Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in Path(directory).glob("victim-*")]


def produce(port: int, name: str, first: int, count: int, out: str) -> None:
    from thespian.actors import ActorSystem

    from pachka_actors import Overloaded, Pachka

    # Attaches to the running admin on `port`; this process must not shut it down.
    asys = ActorSystem("multiprocTCPBase", {"Admin Port": port}, logDefs=None)
    handle = Pachka.connect(asys, name)
    accepted = []
    for i in range(first, first + count):
        try:
            handle.send_message(i)
        except Overloaded:
            continue
        accepted.append(i)
    handle.close()
    Path(out).write_text(json.dumps(accepted))


if __name__ == "__main__":
    produce(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
