"""A server's local channel: pickled frames over a Unix socket, beside Thespian.

A Thespian message between two actors costs about half a millisecond of CPU on
multiprocTCPBase, whatever it carries, and an actor inside its
`ActorExitRequest` handler receives none at all. So a server exchanges batches
and results with the exporters it forked over a socket of its own: a frame costs
tens of microseconds, and the exit handler can still wait on it (`select`).
Thespian still creates and ends the processes. The socket is in Linux's
abstract namespace, named at random: nothing on disk, nothing to clean up, and
only processes of the same host (network namespace) can reach it.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
from dataclasses import dataclass
from typing import Any

_HEADER = struct.Struct("!Q")

#: Bytes asked of the socket per `recv`. Python allocates that much for every call that
#: returns data: 1 MiB cost ~20 us per call (mmap, faults, shrink), 64 KiB ~1 us; a bigger
#: frame takes a few calls.
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Unloadable:
    """Stands for a frame this process could not unpickle, and says why."""

    reason: str


class Listener:
    """Where the processes beside a server connect (`Link.connect(listener.name)`)."""

    def __init__(self) -> None:
        #: The address, without the abstract namespace's leading NUL (so it fits anywhere).
        self.name = f"pachka-{os.getpid()}-{os.urandom(8).hex()}"
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.bind("\0" + self.name)
        self._socket.listen(128)
        self._socket.setblocking(False)

    def fileno(self) -> int:
        return self._socket.fileno()

    def accept(self) -> list[Link]:
        """Every connection waiting, without blocking."""
        links: list[Link] = []
        while True:
            try:
                connection, _ = self._socket.accept()
            except BlockingIOError:
                return links
            links.append(Link(connection))

    def close(self) -> None:
        self._socket.close()


class Link:
    """One connected peer. `send` writes a whole frame; `receive` returns the frames that
    have come (never blocking); `next` waits for one."""

    def __init__(self, connection: socket.socket) -> None:
        self._socket = connection
        self._buffer = bytearray()
        self.closed = False  # the peer closed its end (or died)

    @classmethod
    def connect(cls, name: str) -> Link:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect("\0" + name)
        return cls(connection)

    def fileno(self) -> int:
        return self._socket.fileno()

    def send(self, frame: Any) -> bool:
        """Write `frame`; False when the peer is gone."""
        data = pickle.dumps(frame, pickle.HIGHEST_PROTOCOL)
        try:
            self._socket.sendall(_HEADER.pack(len(data)) + data)
        except OSError:  # EPIPE, ECONNRESET: the peer died
            self.closed = True
            return False
        return True

    def receive(self) -> list[Any]:
        """The whole frames that have arrived; `closed` is set once the peer is gone."""
        while not self.closed:
            try:
                chunk = self._socket.recv(_CHUNK, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
            self._buffer += chunk
        return self._frames()

    def next(self, timeout: float | None = None) -> Any:
        """Wait for the next frame; None when the peer closed its end (or `timeout` passed)."""
        try:
            self._socket.settimeout(timeout)
            while not (frames := self._frames(limit=1)):
                chunk = self._socket.recv(_CHUNK)
                if not chunk:
                    self.closed = True
                    return None
                self._buffer += chunk
        except (TimeoutError, OSError):
            return None
        return frames[0]

    def _frames(self, limit: int | None = None) -> list[Any]:
        frames: list[Any] = []
        buffer = self._buffer
        while len(buffer) >= _HEADER.size and (limit is None or len(frames) < limit):
            (size,) = _HEADER.unpack_from(buffer)
            if len(buffer) < _HEADER.size + size:
                break
            try:
                frames.append(pickle.loads(buffer[_HEADER.size:_HEADER.size + size]))
            except Exception as exc:  # a class this process cannot load
                frames.append(Unloadable(f"{type(exc).__name__}: {exc}"))
            del buffer[:_HEADER.size + size]
        return frames

    def close(self) -> None:
        self.closed = True
        self._socket.close()


# ---- what a handle and its server say over the link (see `_exit`) -------------------------


@dataclass(frozen=True)
class GetLink:
    """Where the server's link is, for a handle (Thespian request); reply: `LinkName`."""


@dataclass(frozen=True)
class LinkName:
    name: str | None  # None: the server has no processes beside it (simpleSystemBase)


@dataclass(frozen=True)
class Producer:
    """A handle's first frame: it is told on this link when the server exits."""


@dataclass(frozen=True)
class Exiting:
    """To producers: the server is in its exit handler, where Thespian delivers nothing:
    ship what you hold over this link, now."""
