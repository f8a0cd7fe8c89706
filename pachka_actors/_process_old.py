"""Where an actor runs, so that a parent can really kill a child stuck in a handler.

Thespian has no kill: `ActorExitRequest` is an ordinary message that a blocked
handler never reads. On a multi-process base each actor is an OS process, so
the only sure stop is SIGKILL to its pid, and only from the same host. Whether a
process has ended is read from Linux's /proc, so the library is Linux-only.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

if not sys.platform.startswith("linux"):
    raise ImportError(f"pachka_actors runs on Linux only (it reads /proc to tell whether an "
                      f"actor's process has ended); this is {sys.platform}")


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

    def ended(self, parent: int | None = None) -> bool:
        """Whether the process has exited (a zombie counts); False where it cannot be seen.

        With `parent`, a process no longer that one's child has ended too: its pid
        was reaped and reused.
        """
        if self.host != socket.gethostname():
            return False
        fields = _stat(self.pid)
        return fields is None or fields[0] in ("Z", "X") or (
            parent is not None and int(fields[1]) != parent)

    def wait_ended(self, timeout: float, parent: int | None = None) -> bool:
        """`ended`, polled for up to `timeout` seconds."""
        return _poll(lambda: self.ended(parent), timeout)

    def kill_tree(self) -> bool:
        """SIGKILL the process and every descendant; True when the process itself was live.

        A killed actor's own children (a supervisor's, a Pachka server's exporters)
        would otherwise live on, orphaned. Each process is frozen with SIGSTOP before
        its children are listed, so that none escapes by forking meanwhile.
        """
        if not self.killable():
            return False
        frozen: list[int] = []
        pending = [self.pid]
        while pending:
            pid = pending.pop()
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            frozen.append(pid)
            _poll(functools.partial(_halted, pid), 0.1)  # SIGSTOP takes effect asynchronously
            pending += _children(pid)
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return self.pid in frozen


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    """Live child processes of `pid` (Linux's /proc; none found elsewhere)."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            fields = _stat(int(entry)) if entry.isdigit() else None
            if fields is not None and int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry))
    return found


def _halted(pid: int) -> bool:
    """Stopped by a signal, or ended."""
    fields = _stat(pid)
    return fields is None or fields[0] in ("T", "t", "Z", "X")


def _poll(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether `condition` holds within `timeout` seconds (checked every millisecond)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def die_with_parent() -> None:
    """Have Linux SIGKILL this process when its parent process dies.

    For an actor's child processes (exporters): a SIGKILLed server cannot end
    them, and they would live on as orphans. Call it only in a process of its
    own, never in a caller's (simpleSystemBase runs actors in the caller).
    """
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


_PR_SET_PDEATHSIG = 1
