"""`Pachka`: the handle a program outside the actors uses to start and feed a server.

On multi-process bases a Thespian round trip costs about a millisecond, more than
a message is worth, so by default the handle lingers: `send_message` reserves
room at the server in advance (a credit grant, one round trip per `buffer_size`
messages), keeps the messages locally, and ships them as one list at most
`linger` seconds later. Overload stays exact: a message is only buffered under a
grant, so `send_message` still returns only once the message counts against the
server's capacity, and raises `Overloaded` otherwise. All traffic of a handle
goes through its courier (`_courier.py`), which makes it safe to share between
threads.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Hashable, Iterable, Mapping
from datetime import timedelta
from typing import Any

from thespian.actors import ActorAddress, ActorExitRequest, ActorSystem

from ._ask import Unreachable
from ._courier import UNLOADABLE, Courier, check_picklable, probe, system_lock, unloadable
from ._options import seconds
from ._placement import create_placed
from ._thespian import runs_in_caller_thread, system_key
from .config import DEFAULT_LINGER, ChildSpec, HandleOptions, PachkaConfig, parse_requirements
from .errors import (
    ActorTimeout,
    AlreadyStarted,
    ConfigError,
    NotStarted,
    Overloaded,
    PachkaError,
    UnpicklableMessage,
)
from .messages import (
    Accepted,
    GetStats,
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
from .metrics import Stats
from .server import PachkaServer

log = logging.getLogger(__name__)

#: Longest wait, per handle, of the work done for it at interpreter exit and before
#: `ActorSystem.shutdown()`: shipping its buffer, stopping a server it started.
EXIT_TIMEOUT = 10.0
#: Seconds a named start waits for its server before asking the admin for the name again.
NAME_PROBE = 1.0

#: `send_message(timeout=0)`, the default, needs no validation (a hot path).
_ZERO_TYPES = (float, int)

_LIVE: weakref.WeakSet[Pachka] = weakref.WeakSet()
_HOOKS = threading.Lock()
_hooked = False


class Pachka:
    """A handle to a running Pachka server; safe to share between threads.

    `linger` (seconds) lets `send_message` buffer messages under credits granted
    by the server, shipping them in lists of up to `buffer_size` within `linger`;
    None sends each message with its own round trip. On simpleSystemBase no
    thread may run, so a buffer ships when full, at the first `send_message`
    after `linger`, or at any other call into the system. Calls that must see
    the server as it is (`send_messages`, `status`, `flush`, `stop`) ship the
    buffer first, so order is kept.
    """

    def __init__(self, system: ActorSystem, address: ActorAddress, *,
                 ask_timeout: float | None = 60.0, linger: float | None = DEFAULT_LINGER,
                 buffer_size: int = 1000) -> None:
        inline = runs_in_caller_thread(system)
        options = HandleOptions(ask_timeout, linger, buffer_size)
        self.system = system
        self.address = address
        self.ask_timeout = options.ask_timeout
        self.linger = options.linger
        self.buffer_size = options.buffer_size
        self._key = system_key(system)
        self._courier = Courier(system, address, self._key, ask_timeout=self.ask_timeout,
                                linger=self.linger, buffer_size=self.buffer_size,
                                threaded=not inline, checks_pickling=not inline)
        #: Why the server can no longer take messages (set when it stopped or is gone).
        self._gone: str | None = None
        #: Started by this handle and neither stopped nor closed: stopped at interpreter exit.
        self._owns_server = False
        _track(self)

    @classmethod
    def start(cls, *, system: ActorSystem, ask_timeout: float | None = 60.0,
              linger: float | None = DEFAULT_LINGER, buffer_size: int = 1000,
              requirements: Mapping[str, Any] | None = None, **options: Any) -> Pachka:
        """Validate `options` (see docs/options.md), start the server and wait until it runs.

        `requirements`: capabilities of the convention member to run the server on
        (docs/scale-out.md). Raises `ConfigError` before any actor starts (also when
        no member has such capabilities), `AlreadyStarted` if `name` is taken.
        The server is linked to this process as with Pachka's `start_link`: if
        neither `stop()` nor `close()` was called, interpreter exit stops it.
        """
        config = PachkaConfig.parse(options)
        # Refuse bad ones before any actor.
        HandleOptions(ask_timeout, linger, buffer_size)
        placement = parse_requirements("requirements", requirements)
        deadline = None if ask_timeout is None else time.monotonic() + ask_timeout
        probed: ActorAddress | None = None
        while True:
            with system_lock(system_key(system)):
                address = create_placed(system, PachkaServer, placement,
                                        globalName=config.name)
            handle = cls(system, address, ask_timeout=ask_timeout, linger=linger,
                         buffer_size=buffer_size)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                # A name just given up by a stopped server can still lead to it for a moment:
                # probe briefly, then ask the admin again, until `ask_timeout`.
                probe = left if config.name is None else min(NAME_PROBE, left or NAME_PROBE)
                handle._courier.call(StartServer(config), Started, probe)
                break
            except AlreadyStarted:
                if address != probed:
                    handle._courier.end(ask_timeout)
                    raise
                break  # our earlier probe got there after all
            except (ActorTimeout, NotStarted):  # the name's last server is still exiting
                handle._courier.end(ask_timeout)
                if config.name is None or (deadline is not None
                                           and time.monotonic() >= deadline):
                    raise
                probed = address
                time.sleep(0.05)
            except BaseException:
                handle._courier.end(ask_timeout)
                raise
        handle._owns_server = True
        return handle

    @classmethod
    def connect(cls, system: ActorSystem, server: str | ActorAddress, **handle: Any) -> Pachka:
        """A handle to a started server, by its `name` or its actor address."""
        HandleOptions.parse(handle)
        if not isinstance(server, str):
            return cls(system, server, **handle)
        with system_lock(system_key(system)):
            address = system.createActor(PachkaServer, globalName=server)
        connected = cls(system, address, **handle)
        try:
            connected.status()
        except NotStarted:
            # createActor with a free globalName made a blank server: do not leave it behind.
            with system_lock(connected._key):
                system.tell(connected.address, ActorExitRequest())
            connected.close()
            raise NotStarted(f"no Pachka server named {server!r} is started") from None
        return connected

    @staticmethod
    def child_spec(*, id: Hashable, restart: str = "permanent",
                   shutdown: float | timedelta | str | None = 5.0,
                   requirements: Mapping[str, Any] | None = None, **options: Any) -> ChildSpec:
        """A supervisor child spec for a Pachka server; its graceful stop is Pachka's drain.

        The supervisor sends the server `StartServer` and, to stop it, `Stop`;
        give `shutdown` room for the drain (see docs/shutdown.md). Find the
        server with `which_children()` and reach it with `Pachka.connect`.
        `requirements` places the server on a convention member (docs/scale-out.md).
        """
        if options.get("name") is not None:
            raise ConfigError("name", "a supervised server is found through which_children(); "
                                      "a globalName would outlive its restarts")
        config = PachkaConfig.parse(options)
        return ChildSpec(id, (PachkaServer, StartServer(config)), restart=restart,
                         shutdown=shutdown, stop_message=Stop(), requirements=requirements)

    def send_message(self, message: Any, *, timeout: float = 0.0) -> None:
        """Queue one message; raises `Overloaded` when the queue is full or the server stops.

        `timeout` (seconds, Kafka's `max.block.ms`): when the queue is full, wait up
        to that long for room, at the server, in turn with other waiting producers,
        before raising `Overloaded`; no busy loop. 0 refuses at once, as Pachka does.
        A message that cannot be pickled (on a multi-process base) raises
        `UnpicklableMessage` here and is not queued; nothing else is affected.
        """
        if self._gone is not None:
            raise Overloaded(self._gone, terminating=True)
        wait = 0.0 if timeout == 0 and type(timeout) in _ZERO_TYPES else seconds("timeout", timeout)
        try:
            if self.linger is not None:
                self._courier.put(message, wait)
                return
            if self._courier.checks_pickling:
                check_picklable(message)
            try:
                accepted = self._courier.call(SendMessage(message), Accepted, self.ask_timeout)
            except Exception as exc:
                self._name_unpicklable("send_message", [message], exc)
                raise
            if accepted.refused is not None and not accepted.refused.terminating and wait:
                accepted = self._send_when_room(message, wait)
        except Unreachable as exc:
            raise self._lost_server(exc) from exc
        if accepted.refused is not None:
            raise accepted.refused

    def _send_when_room(self, message: Any, wait: float) -> Accepted:
        """Wait at the server for room for one message, then send it under that credit."""
        timeout = None if self.ask_timeout is None else self.ask_timeout + wait
        granted = self._courier.call(RequestCredit(1, wait), Granted, timeout)
        if granted.credit is None:
            return Accepted(0, granted.refused)
        result: Accepted = self._courier.call(SendMessages([message], granted.credit), Accepted,
                                              self.ask_timeout)
        return result

    def send_messages(self, messages: Iterable[Any]) -> int:
        """Queue what fits of `messages`, in order; returns how many were accepted.

        On a multi-process base a message that cannot be pickled raises
        `UnpicklableMessage` naming its index, and none of the list is queued.
        """
        if self._gone is not None:
            return 0  # what a terminating server answers: none accepted
        batch = list(messages)
        try:
            accepted = self._courier.call(SendMessages(batch), Accepted, self.ask_timeout)
        except Unreachable as exc:
            raise self._lost_server(exc) from exc
        except Exception as exc:
            self._name_unpicklable("send_messages", batch, exc)
            raise
        return int(accepted.count)

    def _name_unpicklable(self, call: str, batch: list[Any], failure: Exception) -> None:
        """`call` failed, maybe because a message did not cross to the server's process
        (multi-process bases): if so, raise `UnpicklableMessage` naming it."""
        if not self._courier.checks_pickling or isinstance(failure, PachkaError):
            return
        for index, message in enumerate(batch):
            try:
                check_picklable(message)
            except UnpicklableMessage as exc:
                raise UnpicklableMessage(f"{call}: message {index}: {exc}; none of the "
                                         f"{len(batch)} was queued") from failure
        bad = unloadable(batch, probe(lambda request: self._courier.call(
            request, Accepted, self.ask_timeout)))
        if bad:
            index = min(bad)
            raise UnpicklableMessage(
                f"{call}: message {index}, a {type(batch[index]).__qualname__}, cannot "
                f"be loaded by the server's process ({UNLOADABLE}); none of the {len(batch)} "
                f"was queued") from failure

    def status(self) -> ServerStatus:
        if self._gone is not None:
            raise NotStarted(self._gone)
        result: ServerStatus = self._courier.call(GetStatus(), ServerStatus, self.ask_timeout)
        return result

    def stats(self) -> Stats:
        """The server's counters since it started (see docs/metrics.md), after a flush."""
        if self._gone is not None:
            raise NotStarted(self._gone)
        result: Stats = self._courier.call(GetStats(), Stats, self.ask_timeout)
        return result

    def flush(self, timeout: float | None = None) -> None:
        """Ship buffered messages now and wait until the server has them.

        `timeout` (seconds) defaults to the handle's `ask_timeout`.
        """
        self._courier.flush(self.ask_timeout if timeout is None else timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Block until every accepted message is delivered or drained and the server exits.

        `timeout` (seconds, None: forever) bounds the wait, not the drain: on
        `ActorTimeout` the server goes on draining. Once the server stopped, a
        second `stop()` returns at once.
        """
        if self._gone is not None:
            return
        self._owns_server = False
        with contextlib.suppress(Unreachable):  # it exited already: stopped by someone else
            self._courier.call(Stop(), Stopped, timeout)
        self._gone = f"the Pachka server at {self.address} was stopped"
        self._courier.end(self.ask_timeout)

    def close(self) -> None:
        """Ship what is buffered and end the handle's thread; the server runs on.

        A server started by this handle then outlives the process too.
        """
        self._owns_server = False
        self._courier.end(self.ask_timeout)

    def _lost_server(self, exc: Unreachable) -> Overloaded:
        self._gone = f"the Pachka server at {self.address} is gone (stopped?): {exc}"
        return Overloaded(self._gone, terminating=True)

    def _before_shutdown(self) -> None:
        """`ActorSystem.shutdown()` is about to run: the server must have our messages first.

        simpleSystemBase sends actors no `ActorExitRequest` at shutdown, so a server
        this handle started is stopped (drained) here, or its queue would be lost.
        """
        if self._owns_server and not self._courier.threaded:
            try:
                self.stop(_bound(self.ask_timeout))
            except Exception as exc:
                log.error("%s: could not stop the server before the actor system shut down: "
                          "%s; its queued messages are lost", self, exc)
        self._gone = "the actor system was shut down"
        self._owns_server = False
        self._courier.shut_down(self._gone, _bound(self.ask_timeout))

    def _at_exit(self) -> None:
        if self._courier.down is not None:
            return
        try:
            if self._owns_server:
                self.stop(_bound(self.ask_timeout))
            else:
                self._courier.end(_bound(self.ask_timeout))
        except Exception as exc:
            log.error("at exit, %s: %s (%d messages not confirmed by the server)", self, exc,
                      self._courier.pending())

    def __repr__(self) -> str:
        return f"Pachka({self.address})"


def _bound(timeout: float | None) -> float:
    return EXIT_TIMEOUT if timeout is None else min(timeout, EXIT_TIMEOUT)


def _track(handle: Pachka) -> None:
    """Ship (and stop servers the process started) at interpreter exit, and ship before
    any `ActorSystem.shutdown()`, whatever order the program's own exit hooks run in."""
    global _hooked
    with _HOOKS:
        _LIVE.add(handle)
        if not _hooked:
            _hooked = True
            original = ActorSystem.shutdown

            def shutdown(system: ActorSystem) -> None:
                key = system_key(system)
                if key is not None:
                    for live in list(_LIVE):
                        if live._key == key:
                            live._before_shutdown()
                original(system)

            shutdown.__doc__ = original.__doc__
            ActorSystem.shutdown = shutdown
        atexit.unregister(_at_exit)
        atexit.register(_at_exit)  # runs before exit hooks registered earlier


def _at_exit() -> None:
    for handle in list(_LIVE):
        handle._at_exit()
