"""Actors' OS processes: the one sure stop (SIGKILL by pid) and one watch for their ends.

Thespian has no kill: `ActorExitRequest` is an ordinary message that a blocked
handler never reads. On a multi-process base each actor is an OS process, so
the only sure stop is SIGKILL to its pid. Whether a child has ended is told by
a Linux pidfd (`DeathWatch`): no polling of /proc, no pid reused by another
process, and it can wait in `select` beside sockets. The server watches its
exporters and the supervisor its children with it. Linux only.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

if not sys.platform.startswith("linux"):
    raise ImportError(f"pachka_actors runs on Linux only (it watches actors' processes "
                      f"through pidfds and /proc); this is {sys.platform}")

K = TypeVar("K", bound=Hashable)


class DeathWatch(Generic[K]):
    """Child processes by key; `dead()` says which have ended since the last look."""

    def __init__(self) -> None:
        self._watched: dict[K, tuple[int, int | None]] = {}  # key: pid, pidfd (None: gone)

    def watch(self, key: K, pid: int) -> None:
        try:
            fd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:  # ended and reaped already
            fd = None
        self._watched[key] = (pid, fd)

    def forget(self, key: K) -> None:
        _, fd = self._watched.pop(key, (0, None))
        if fd is not None:
            os.close(fd)

    def pid(self, key: K) -> int | None:
        watched = self._watched.get(key)
        return None if watched is None else watched[0]

    def kill(self, key: K) -> bool:
        """SIGKILL the process of `key` and its descendants; False if it is not watched
        or has ended (its pidfd says so: a pid reused since is never hit)."""
        return key in self._watched and not self.ended(key) and kill_tree(self._watched[key][0])

    def ended(self, key: K) -> bool:
        """The process of `key` has ended (False for a key not watched)."""
        if key not in self._watched:
            return False
        fd = self._watched[key][1]
        return fd is None or _readable(fd)

    def fds(self) -> dict[int, K]:
        """The pidfds, to wait on with other files: readable once the process ended."""
        return {fd: key for key, (_, fd) in self._watched.items() if fd is not None}

    def dead(self, timeout: float = 0.0) -> list[K]:
        """The keys whose process has ended (waiting up to `timeout` for one); forgotten."""
        gone = [key for key, (_, fd) in self._watched.items() if fd is None]
        fds = self.fds()
        if not gone and fds:
            ready, _, _ = select.select(list(fds), [], [], timeout)
            gone = [fds[fd] for fd in ready]
        for key in gone:
            self.forget(key)
        return gone

    def close(self) -> None:
        for key in list(self._watched):
            self.forget(key)


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def kill_tree(pid: int) -> bool:
    """SIGKILL the process and every descendant; True when the process itself was live.

    A killed actor's own children (a supervisor's, a Pachka server's exporters)
    would otherwise live on, orphaned. Each process is frozen with SIGSTOP before
    its children are listed, so that none escapes by forking meanwhile.
    """
    if pid == os.getpid():
        return False  # never this process (simpleSystemBase runs actors here)
    frozen: list[int] = []
    pending = [pid]
    while pending:
        target = pending.pop()
        try:
            os.kill(target, signal.SIGSTOP)
        except ProcessLookupError:
            continue
        frozen.append(target)
        _poll(functools.partial(_halted, target), 0.1)  # SIGSTOP takes effect asynchronously
        pending += child_pids(target)
    for target in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)
    return pid in frozen


def ended(pid: int) -> bool:
    """Whether the process has exited, every thread of it (a zombie counts): as its pidfd
    says, which a `DeathWatch` reads. /proc shows a SIGKILLed process as a zombie while
    its other threads are still ending, for tens of ms on a loaded machine."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # ended and reaped
        return True
    try:
        return _readable(fd)
    finally:
        os.close(fd)


def stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def child_pids(pid: int) -> list[int]:
    """Live child processes of `pid`."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            fields = stat(int(entry)) if entry.isdigit() else None
            if fields is not None and int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry))
    return found


def _halted(pid: int) -> bool:
    """Stopped by a signal, or ended."""
    fields = stat(pid)
    return fields is None or fields[0] in ("T", "t", "Z", "X")


def _poll(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether `condition` holds within `timeout` seconds (checked every millisecond)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def die_with_parent(sig: signal.Signals = signal.SIGKILL, parent: int | None = None) -> None:
    """Have Linux send this process `sig` when its parent process dies.

    An exporter dies with its server (SIGKILL: its batch is the server's to
    retry); a server whose parent died gets SIGTERM, which Thespian turns into an
    `ActorExitRequest`, so that it finishes and exits rather than live on
    orphaned. Only in a process of its own, never a caller's (simpleSystemBase).
    `parent`: the pid that started this process, where known: one that died before
    this call (while Thespian started the child) sends `sig` at once, too.
    """
    parent = os.getppid() if parent is None else parent
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)


_PR_SET_PDEATHSIG = 1
