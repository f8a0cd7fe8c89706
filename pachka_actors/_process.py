"""Where an actor runs, so that a parent can really kill a child stuck in a handler.

Thespian has no kill: `ActorExitRequest` is an ordinary message that a blocked
handler never reads. On a multi-process base each actor is an OS process, so
the only sure stop is SIGKILL to its pid, and only from the same host.
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessId:
    """An OS process on a host; `kill` refuses processes it cannot reach."""

    pid: int
    host: str

    @classmethod
    def current(cls) -> ProcessId:
        return cls(os.getpid(), socket.gethostname())

    def killable(self) -> bool:
        """False for the caller's own process (simpleSystemBase) or another host."""
        return self.pid != os.getpid() and self.host == socket.gethostname()

    def kill(self) -> bool:
        """SIGKILL the process; True when a signal was sent to a live process."""
        if not self.killable():
            return False
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True
