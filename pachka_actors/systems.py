"""Isolated Thespian actor systems that leave no process behind (demo, tests, benchmarks).

Thespian traps this avoids: a TCP admin port still in use silently attaches to
the old admin, `logDefs=False` crashes multi-process actors, and an actor stuck
in a handler makes `shutdown()` give up and leak processes. Each system gets a
fresh port; after `shutdown()` any process left in the admin's OS session is
SIGKILLed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from thespian.actors import Actor, ActorAddress, ActorSystem

from ._process import _stat


class SessionProbe(Actor):  # type: ignore[misc]
    """Answers with the OS session id of its process: the admin daemon's session."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if message == "sid":
            self.send(sender, os.getsid(0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of OS session `sid`, other than the caller."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        fields = _stat(int(entry))
        if fields is not None and int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            pids.append(int(entry))
    return pids


def start_system(base: str) -> tuple[ActorSystem, int | None]:
    """A new system and its admin's session id (None for simpleSystemBase: no processes)."""
    capabilities: dict[str, Any] = {}
    if base == "multiprocTCPBase":
        capabilities["Admin Port"] = free_port()
    asys = ActorSystem(base, capabilities, logDefs=None, transientUnique=True)
    if base == "simpleSystemBase":
        return asys, None
    probe = asys.createActor(SessionProbe)
    sid = asys.ask(probe, "sid", 10)
    if not isinstance(sid, int):
        asys.shutdown()
        raise RuntimeError(f"the actor system did not answer: {sid!r}")
    return asys, sid


def shutdown_system(asys: ActorSystem, sid: int | None, grace: float = 2.0) -> list[int]:
    """`shutdown()`, give the processes `grace` seconds to exit, then SIGKILL the rest.

    Returns the pids that had to be killed, once they are gone.
    """
    asys.shutdown()
    if sid is None:
        return []
    killed = _wait_empty(sid, grace)
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if _wait_empty(sid, grace):
        raise RuntimeError(f"processes of session {sid} survived SIGKILL: {session_pids(sid)}")
    return killed


def _wait_empty(sid: int, timeout: float) -> list[int]:
    """Wait for session `sid` to have no live process; the pids still alive at `timeout`."""
    deadline = time.monotonic() + timeout
    while (pids := session_pids(sid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return pids


@dataclass
class SystemRecord:
    """One isolated system: its admin's session (None: simpleSystemBase), and how its
    shutdown went (pids that had to be SIGKILLed, seconds it took; None until then)."""

    base: str
    sid: int | None
    killed: list[int] = field(default_factory=list)
    shutdown_seconds: float | None = None


#: Every system `isolated_system` started in this process, for checks at the end of a run.
RECORDS: list[SystemRecord] = []


@contextlib.contextmanager
def isolated_system(base: str = "multiprocTCPBase") -> Iterator[ActorSystem]:
    """An actor system of `base`, shut down on exit with no process left behind."""
    asys, sid = start_system(base)
    record = SystemRecord(base, sid)
    RECORDS.append(record)
    try:
        yield asys
    finally:
        started = time.perf_counter()
        record.killed = shutdown_system(asys, sid)
        record.shutdown_seconds = time.perf_counter() - started


def leftover_pids() -> list[int]:
    """Live processes of any system `isolated_system` started (none, when all is well)."""
    return [pid for record in RECORDS if record.sid is not None
            for pid in session_pids(record.sid)]
