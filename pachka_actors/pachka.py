"""`Pachka`: the handle a program outside the actors uses to start and feed a server.

On multi-process bases a Thespian round trip costs about a millisecond, more than
a message is worth, so by default the handle lingers: `send_message` reserves
room at the server in advance (a credit grant, one round trip per `buffer_size`
messages), keeps the messages locally, and a shipper thread of the handle sends
them as one list at most `linger` seconds later. Overload stays exact: a message
is only buffered under a grant, so `send_message` still returns only once the
message counts against the server's capacity, and raises `Overloaded` otherwise.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Hashable, Iterable
from datetime import timedelta
from typing import Any

from thespian.actors import ActorAddress, ActorExitRequest, ActorSystem

from ._ask import R, ask
from ._thespian import runs_in_caller_thread
from .config import DEFAULT_LINGER, ChildSpec, HandleOptions, PachkaConfig
from .errors import ConfigError, NotStarted, PachkaError
from .messages import (
    Accepted,
    GetStatus,
    Granted,
    RequestCredit,
    SendMessage,
    SendMessages,
    ServerStatus,
    Started,
    StartServer,
    Stop,
    Stopped,
)
from .server import PachkaServer

log = logging.getLogger(__name__)

_LIVE: weakref.WeakSet[Pachka] = weakref.WeakSet()


class Pachka:
    """A handle to a running Pachka server, for one producing thread.

    `linger` (seconds) lets `send_message` buffer messages under credits granted
    by the server, shipping them in lists of up to `buffer_size` within `linger`;
    None sends each message with its own round trip. Buffering needs a thread of
    its own, so it is off on `simpleSystemBase`, where actors run in the caller's
    thread. Calls that must see the server as it is (`send_messages`, `status`,
    `flush`, `stop`) ship the buffer first, so order is kept.
    """

    def __init__(self, system: ActorSystem, address: ActorAddress, *,
                 ask_timeout: float | None = 60.0, linger: float | None = DEFAULT_LINGER,
                 buffer_size: int = 1000) -> None:
        options = HandleOptions(ask_timeout, linger, buffer_size)
        self.system = system
        self.address = address
        self.ask_timeout = options.ask_timeout
        self.linger = None if runs_in_caller_thread(system) else options.linger
        self.buffer_size = options.buffer_size
        self._shipper = _Shipper(self) if self.linger is not None else None

    @classmethod
    def start(cls, *, system: ActorSystem, ask_timeout: float | None = 60.0,
              linger: float | None = DEFAULT_LINGER, buffer_size: int = 1000,
              **options: Any) -> Pachka:
        """Validate `options` (see docs/options.md), start the server and wait until it runs.

        Raises `ConfigError` before any actor starts, `AlreadyStarted` if `name` is taken.
        """
        config = PachkaConfig.parse(options)
        HandleOptions(ask_timeout, linger, buffer_size)  # refuse bad ones before any actor
        address = system.createActor(PachkaServer, globalName=config.name)
        handle = cls(system, address, ask_timeout=ask_timeout, linger=linger,
                     buffer_size=buffer_size)
        handle._ask(StartServer(config), Started, ask_timeout)
        return handle

    @classmethod
    def connect(cls, system: ActorSystem, server: str | ActorAddress, **handle: Any) -> Pachka:
        """A handle to a started server, by its `name` or its actor address."""
        HandleOptions.parse(handle)  # refuse bad ones before any actor
        if not isinstance(server, str):
            return cls(system, server, **handle)
        connected = cls(system, system.createActor(PachkaServer, globalName=server), **handle)
        try:
            connected.status()
        except NotStarted:
            # createActor with a free globalName made a blank server: do not leave it behind.
            system.tell(connected.address, ActorExitRequest())
            raise NotStarted(f"no Pachka server named {server!r} is started") from None
        return connected

    @staticmethod
    def child_spec(*, id: Hashable, restart: str = "permanent",
                   shutdown: float | timedelta | str | None = 5.0, **options: Any) -> ChildSpec:
        """A supervisor child spec for a Pachka server; its graceful stop is Pachka's drain.

        The supervisor sends the server `StartServer` and, to stop it, `Stop`;
        give `shutdown` room for the drain (see docs/shutdown.md). Find the
        server with `which_children()` and reach it with `Pachka.connect`.
        """
        if options.get("name") is not None:
            raise ConfigError("name", "a supervised server is found through which_children(); "
                                      "a globalName would outlive its restarts")
        config = PachkaConfig.parse(options)
        return ChildSpec(id, (PachkaServer, StartServer(config)), restart=restart,
                         shutdown=shutdown, stop_message=Stop())

    def send_message(self, message: Any) -> None:
        """Queue one message; raises `Overloaded` when the queue is full or the server stops."""
        if self._shipper is None:
            accepted = self._ask(SendMessage(message), Accepted, self.ask_timeout)
            if accepted.refused is not None:
                raise accepted.refused
        else:
            self._shipper.put(message)

    def send_messages(self, messages: Iterable[Any]) -> int:
        """Queue what fits of `messages`, in order; returns how many were accepted."""
        self.flush()
        return self._ask(SendMessages(list(messages)), Accepted, self.ask_timeout).count

    def status(self) -> ServerStatus:
        self.flush()
        return self._ask(GetStatus(), ServerStatus, self.ask_timeout)

    def flush(self) -> None:
        """Ship buffered messages now and wait until the server has them."""
        if self._shipper is not None:
            self._shipper.flush()

    def stop(self, timeout: float | None = None) -> None:
        """Block until every accepted message is delivered or drained and the server exits.

        `timeout` (seconds, None: forever) bounds the wait, not the drain: on
        `ActorTimeout` the server goes on draining.
        """
        self.close()
        self._ask(Stop(), Stopped, timeout)

    def close(self) -> None:
        """Ship what is buffered and end the shipper thread; the server runs on."""
        if self._shipper is not None:
            self._shipper.close()

    def _ask(self, request: Any, reply_type: type[R], timeout: float | None,
             system: ActorSystem | None = None) -> R:
        return ask(system or self.system, self.address, request, reply_type, timeout)

    def __repr__(self) -> str:
        return f"Pachka({self.address})"


class _Shipper:
    """A handle's buffer and the thread that ships it, in order, from its own endpoint.

    Thespian's external endpoint belongs to one thread, so the thread ships
    through `ActorSystem.private()`. Shipments are asks, one at a time: when
    one returns the server has queued its messages, which orders them before
    anything the handle sends next.
    """

    def __init__(self, handle: Pachka) -> None:
        self.handle = handle
        self.lock = threading.Condition()
        self.buffer: list[Any] = []
        self.credit: int | None = None
        self.room = 0
        self.oldest = 0.0
        self.pending: deque[tuple[int, list[Any]]] = deque()
        self.shipping = False
        self.lost = 0
        self.closed = False
        self.thread: threading.Thread | None = None

    def put(self, message: Any) -> None:
        while True:
            with self.lock:  # the thread may hand the buffer over at any moment
                if self.room:
                    if not self.buffer:
                        self.oldest = time.monotonic()
                        self.lock.notify_all()
                    self.buffer.append(message)
                    self.room -= 1
                    return
            self._renew()

    def _renew(self) -> None:
        """Hand the full buffer to the thread and reserve room for the next one."""
        with self.lock:
            self._hand_over()
            if self.thread is None:
                self.closed = False
                self.thread = threading.Thread(target=self._run, daemon=True,
                                               name=f"pachka-shipper-{self.handle.address}")
                self.thread.start()
                _track(self.handle)
        handle = self.handle
        granted = handle._ask(RequestCredit(handle.buffer_size), Granted, handle.ask_timeout)
        if granted.credit is None:
            assert granted.refused is not None
            raise granted.refused
        with self.lock:
            self.credit, self.room = granted.credit, granted.count

    def _hand_over(self) -> None:
        """Under the lock: the open grant and its messages become a pending shipment."""
        if self.credit is not None:
            self.pending.append((self.credit, self.buffer))
            self.credit, self.buffer, self.room = None, [], 0
            self.lock.notify_all()

    def flush(self) -> None:
        with self.lock:
            self._hand_over()
            self.lock.wait_for(lambda: not self.pending and not self.shipping)
            lost, self.lost = self.lost, 0
        if lost:
            raise PachkaError(f"{lost} buffered messages could not be shipped to the server")

    def close(self) -> None:
        self.flush()
        with self.lock:
            self.closed = True
            self.lock.notify_all()
            thread, self.thread = self.thread, None
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        with self.handle.system.private() as endpoint:
            while shipment := self._next():
                self._ship(endpoint, *shipment)

    def _next(self) -> tuple[int, list[Any]] | None:
        """Wait for a full buffer, or the oldest buffered message to reach its linger."""
        linger = self.handle.linger or 0.0
        with self.lock:
            self.shipping = False
            self.lock.notify_all()
            while not self.pending:
                if self.closed:
                    return None
                wait = self.oldest + linger - time.monotonic() if self.buffer else None
                if wait is not None and wait <= 0:
                    self._hand_over()
                else:
                    self.lock.wait(wait)
            self.shipping = True
            return self.pending.popleft()

    def _ship(self, endpoint: ActorSystem, credit: int, messages: list[Any]) -> None:
        handle = self.handle
        try:
            handle._ask(SendMessages(messages, credit), Accepted, handle.ask_timeout, endpoint)
        except Exception:
            log.exception("could not ship %d buffered messages to %s", len(messages), handle)
            with self.lock:
                self.lost += len(messages)


def _track(handle: Pachka) -> None:
    """Ship at interpreter exit. Registered on first use, so that it runs before an
    `atexit` shutdown of the actor system registered earlier (exit hooks run last-in first)."""
    if not _LIVE:
        atexit.unregister(_flush_all)
        atexit.register(_flush_all)
    _LIVE.add(handle)


def _flush_all() -> None:
    for handle in list(_LIVE):
        try:
            handle.close()
        except Exception:
            log.exception("could not flush %s at exit", handle)
