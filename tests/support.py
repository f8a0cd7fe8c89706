"""Real Thespian actor systems for tests: isolated, shut down, and never leaking a process."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from thespian.actors import ActorSystem

from pachka_actors._process import ProcessId
from pachka_actors.systems import shutdown_system, start_system

#: Sessions of every multi-process system started by the tests, checked at the end of the run.
STARTED_SESSIONS: list[int] = []


@contextlib.contextmanager
def actor_system(base: str) -> Iterator[ActorSystem]:
    """An actor system that is shut down afterwards, its leftover processes killed."""
    asys, sid = start_system(base)
    if sid is not None:
        STARTED_SESSIONS.append(sid)
    try:
        yield asys
    finally:
        shutdown_system(asys, sid)


def process_gone(pid: int) -> bool:
    """The process has exited (a zombie counts)."""
    return ProcessId(pid, socket.gethostname()).ended()
