"""Real Thespian actor systems for tests: isolated, shut down, and never leaking a process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Iterator
from typing import Any

from thespian.actors import Actor, ActorAddress, ActorSystem

MULTIPROC_BASES = ("multiprocTCPBase", "multiprocQueueBase")


class SessionProbe(Actor):  # type: ignore[misc]
    """Answers with the OS session id its process runs in (the admin's session)."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if message == "sid":
            self.send(sender, os.getsid(0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of session `sid`, other than this one."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, session = fields[0], int(fields[3])
        if session == sid and state not in ("Z", "X"):
            pids.append(int(entry))
    return pids


#: Sessions of every multi-process system started by the tests, checked at the end of the run.
STARTED_SESSIONS: list[int] = []


def start_system(base: str) -> ActorSystem:
    capabilities: dict[str, Any] = {}
    if base == "multiprocTCPBase":
        capabilities["Admin Port"] = free_port()
    return ActorSystem(base, capabilities, logDefs=None, transientUnique=True)


@contextlib.contextmanager
def actor_system(base: str) -> Iterator[ActorSystem]:
    """An actor system that is shut down afterwards, its leftover processes killed."""
    asys = start_system(base)
    sid = None
    if base != "simpleSystemBase":
        probe = asys.createActor(SessionProbe)
        sid = asys.ask(probe, "sid", 10)
        assert isinstance(sid, int), f"session probe did not answer: {sid!r}"
        STARTED_SESSIONS.append(sid)
    try:
        yield asys
    finally:
        asys.shutdown()
        if sid is not None:
            for pid in session_pids(sid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
