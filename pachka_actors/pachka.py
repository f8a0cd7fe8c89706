"""`Pachka`: the handle a program outside the actors uses to start and feed a server.

On multi-process bases a Thespian round trip costs about a millisecond, more than
a message is worth, so by default the handle lingers: `send_message` reserves
room at the server in advance (a credit grant, one round trip per `buffer_size`
messages), keeps the messages locally, and ships them as one list at most
`linger` seconds later. Overload stays exact: a message is only buffered under a
grant. All traffic goes through the handle's courier (`_courier.py`), which
makes it safe to share between threads. A message the handle accepted is
delivered, or its loss is reported (`MessagesLost`) by the next call and by `stop()`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any

from thespian.actors import ActorAddress, ActorExitRequest, ActorSystem

from ._ask import R
from ._base import Base, system_key
from ._courier import PLAIN, Courier, check_picklable, system_lock
from ._exit import track
from ._options import seconds
from ._options import timeout as parse_timeout
from ._placement import create_placed
from .config import (
    HANDLE_OPTIONS,
    SERVER_OPTIONS,
    ChildSpec,
    HandleOptions,
    PachkaConfig,
    parse_requirements,
    with_options,
)
from .errors import (
    ActorGone,
    ActorTimeout,
    AlreadyStarted,
    ConfigError,
    MessagesLost,
    MessageTooLarge,
    NotStarted,
    Overloaded,
)
from .messages import (
    Accepted,
    GetStats,
    GetStatus,
    SendMessages,
    ServerStatus,
    Started,
    StartServer,
    Stop,
    Stopped,
)
from .metrics import Stats
from .server import PachkaServer
from .sink import Sink, default_size, sizer

log = logging.getLogger(__name__)

#: Seconds a named start waits for its server before asking the admin for the name again.
NAME_PROBE = 1.0

#: `send_message(wait=0)`, the default, needs no validation (a hot path).
_ZERO_TYPES = (float, int)
_HANDLE_NAMES = frozenset(option.name for option in HANDLE_OPTIONS)


class Pachka:
    """A handle to a running Pachka server; safe to share between threads.

    `linger` (seconds) lets `send_message` buffer messages under credits granted
    by the server, shipping them in lists of up to `buffer_size` within `linger`;
    None sends each message with its own round trip. On simpleSystemBase no
    thread may run, so a buffer ships when full, at the first `send_message`
    after `linger`, or at any other call into the system. Calls that must see
    the server as it is (`send_messages`, `status`, `flush`, `stop`) ship the
    buffer first, so order is kept. As a context manager it stops, on leaving,
    a server it started, and closes otherwise.

    `message_size`: how the server measures a message (`Sink.message_size` bound to
    its `server_value`), for a lingering handle to measure as it does.
    """

    @with_options((HandleOptions, HANDLE_OPTIONS))
    def __init__(self, system: ActorSystem, address: ActorAddress,
                 options: HandleOptions | None = None, *,
                 message_size: Callable[[Any], int] = default_size, **handle: Any) -> None:
        self.options = HandleOptions.parse(handle) if options is None else options
        self.system, self.address = system, address
        self.ask_timeout = self.options.ask_timeout
        self.linger = self.options.linger
        self.buffer_size = self.options.buffer_size
        self._courier = Courier(system, address, self.options, Base.of(system), message_size)
        #: Started by this handle and neither stopped nor closed: stopped at interpreter exit.
        self._owns_server = False
        self._final: Stats | None = None  # the counters the server stopped with
        track(self)  # ships (and stops a server it started) at exit

    @classmethod
    @with_options((PachkaConfig, SERVER_OPTIONS), (HandleOptions, HANDLE_OPTIONS))
    def start(cls, system: ActorSystem, *, requirements: Mapping[str, Any] | None = None,
              **options: Any) -> Pachka:
        """Start a server with `options` (see docs/options.md) and wait until it runs.

        `requirements`: capabilities of the convention member to run the server on
        (docs/scale-out.md). Raises `ConfigError` before any actor starts (also when
        no member has such capabilities), `AlreadyStarted` if `name` is taken.
        The server is linked to this process as with Pachka's `start_link`: if
        neither `stop()` nor `close()` was called, interpreter exit stops it, and
        so does leaving `with Pachka.start(...) as server:`.
        """
        handle = HandleOptions.parse({k: options.pop(k) for k in _HANDLE_NAMES & set(options)})
        config = PachkaConfig.parse(options, also=HANDLE_OPTIONS)
        placement = parse_requirements("requirements", requirements)
        timeout = handle.ask_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        probed: ActorAddress | None = None
        while True:
            with system_lock(system_key(system)):
                address = create_placed(system, PachkaServer, placement,
                                        globalName=config.name)
            server = cls(system, address, handle,
                         message_size=sizer(config.sink, config.server_value))
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            # A name just given up by a stopped server can still lead to it for a moment:
            # probe briefly, then ask the admin again, until `ask_timeout`.
            probe = left if config.name is None else min(NAME_PROBE, left or NAME_PROBE)
            try:
                server._courier.call(StartServer(config), Started, probe)
            except AlreadyStarted:
                if address != probed:  # else our earlier probe got there after all
                    server._courier.end(timeout)
                    raise
            except (ActorTimeout, NotStarted):  # ActorGone too; NotStarted: it is exiting
                server._courier.end(timeout)
                if config.name is None or (deadline is not None
                                           and time.monotonic() >= deadline):
                    raise
                probed = address
                time.sleep(0.05)
                continue
            except BaseException:
                server._courier.end(timeout)
                raise
            server._owns_server = True
            return server

    @classmethod
    @with_options((HandleOptions, HANDLE_OPTIONS))
    def connect(cls, system: ActorSystem, server: str | ActorAddress, *,
                sink: Sink | None = None, server_value: Any = None, **handle: Any) -> Pachka:
        """A handle to a started server, by its `name` or its actor address.

        `sink` and `server_value`: the server's, when its sink overrides
        `Sink.message_size` and a byte limit is set, so that this handle measures
        messages as the server does (else a lingering handle may take a message the
        server finds too large: it is then reported lost, `MessagesLost`).
        """
        options = HandleOptions.parse(handle)
        size = sizer(sink, server_value)
        if not isinstance(server, str):
            return cls(system, server, options, message_size=size)
        with system_lock(system_key(system)):
            address = system.createActor(PachkaServer, globalName=server)
        connected = cls(system, address, options, message_size=size)
        try:
            connected.status()
        except NotStarted:
            # createActor with a free globalName made a blank server: do not leave it behind.
            with system_lock(system_key(system)):
                system.tell(address, ActorExitRequest())
            connected.close()
            raise NotStarted(f"no Pachka server named {server!r} is started") from None
        return connected

    @staticmethod
    @with_options((PachkaConfig, SERVER_OPTIONS))
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

    # ---- feeding the server ------------------------------------------------------------

    def send_message(self, message: Any, *, wait: float = 0.0) -> None:
        """Queue one message; raises `Overloaded` when the queue is full or the server stops.

        `wait` (seconds, Kafka's `max.block.ms`): when the queue is full, wait up
        to that long for room, at the server, in turn with other waiting producers,
        before raising `Overloaded`; no busy loop. 0 refuses at once, as Pachka does.
        A message that cannot be pickled (on a multi-process base) raises
        `UnpicklableMessage` here and is not queued; nothing else is affected; so
        does one larger than `max_batch_bytes`, with `MessageTooLarge`.
        `MessagesLost` reports earlier messages lost; this one is then not queued.
        """
        courier = self._courier
        if courier.trouble:
            self._hear(lambda why: Overloaded(why, terminating=True))
        if not (wait == 0 and type(wait) in _ZERO_TYPES):
            wait = seconds("wait", wait)
        pickled = None
        if courier.checks_pickling and type(message) not in PLAIN:
            pickled = check_picklable(message)
        try:
            if self.linger is not None:
                courier.put(message, wait, pickled)
                return
            accepted = courier.call(SendMessages([message]), Accepted, self.ask_timeout)
            if accepted.count:
                return
            refused = accepted.refused
            assert refused is not None
            if isinstance(refused, MessageTooLarge) or refused.terminating or not wait:
                raise refused
            courier.put(message, wait)  # room at the server, then at once under its credit
            courier.flush(self.ask_timeout)
        except ActorGone:
            self._hear(lambda why: Overloaded(why, terminating=True))
            raise

    def send_messages(self, messages: Iterable[Any]) -> int:
        """Queue what fits of `messages`, in order; returns how many were accepted.

        On a multi-process base a message that cannot be pickled raises
        `UnpicklableMessage` naming its index, and none of the list is queued; so
        does one larger than `max_batch_bytes`, with `MessageTooLarge`. A server
        that stopped accepts none (0). A str or bytes is refused (`ConfigError`
        naming `messages`): it would go as one message per character.
        """
        if isinstance(messages, str | bytes | bytearray):
            raise ConfigError("messages", f"expected an iterable of messages, got a "
                                          f"{type(messages).__name__} (one message per "
                                          f"character); send_message sends it as one")
        if self._courier.trouble:
            self._hear(None)
        if self._courier.gone is not None:
            return 0  # what a terminating server answers: none accepted
        try:
            accepted = self._courier.call(SendMessages(list(messages)), Accepted,
                                          self.ask_timeout)
        except ActorGone:
            self._hear(None)
            return 0
        if isinstance(accepted.refused, MessageTooLarge):
            raise accepted.refused
        return accepted.count

    # ---- asking ------------------------------------------------------------------------

    def status(self) -> ServerStatus:
        """A snapshot of the server (state, queue and batch lengths, reserved room, the
        running timer), after a flush. `NotStarted` once the server stopped or is gone."""
        return self._ask(GetStatus(), ServerStatus)

    def stats(self) -> Stats:
        """The server's counters since it started (see docs/metrics.md), after a flush; after
        this handle's `stop()`, those it exited with. `NotStarted` once it is gone otherwise."""
        if self._final is not None:
            return self._final
        return self._ask(GetStats(), Stats)

    def flush(self, timeout: float | None = None) -> None:
        """Ship buffered messages now and wait until the server has them (with
        `journal_path`, in its journal: durable).

        `timeout` (seconds) defaults to the handle's `ask_timeout`. `MessagesLost`
        when some could not be shipped.
        """
        timeout = self.ask_timeout if timeout is None else seconds("timeout", timeout)
        if self._courier.trouble:
            self._hear(None)
        self._courier.flush(timeout)
        self._courier.check()

    # ---- ending ------------------------------------------------------------------------

    def stop(self, timeout: float | None = None) -> None:
        """Block until every accepted message is delivered or drained and the server exits.

        `timeout` (seconds, None: forever) bounds the wait, not the drain: on
        `ActorTimeout` the server goes on draining. Once the server stopped, a
        second `stop()` returns at once. Raises `MessagesLost`, once the server
        stopped, when any message this handle accepted was lost, even if an
        earlier call said so, and then when the server lost any it had accepted
        (`Stats.lost`: its system was shut down meanwhile, and `shutdown_timeout`
        passed with nowhere to keep them).
        """
        timeout = parse_timeout("timeout", timeout)
        courier = self._courier
        if courier.gone is None:
            deadline = None if timeout is None else time.monotonic() + timeout
            courier.flush(timeout, release=True)  # no credit left open: the server waits for it
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            with contextlib.suppress(ActorGone):  # it exited already: stopped elsewhere
                self._final = courier.call(Stop(), Stopped, left).stats
            courier.down(f"the Pachka server at {self.address} was stopped")
        self._owns_server = False  # stopped: nothing more to do at interpreter exit
        courier.end(self.ask_timeout)
        courier.check(total=True)
        if self._final is not None and self._final.lost:
            raise MessagesLost(self._final.lost, "not delivered within shutdown_timeout, and no "
                                                 "spill_path or journal_path kept them (the "
                                                 "server's log says more)", by="the server")

    def close(self) -> None:
        """Ship what is buffered, give back reserved room and end the handle's thread; the
        server runs on (one started by this handle then outlives the process too).

        Raises `MessagesLost`, after closing, when any message this handle accepted
        was lost. A later call starts a new thread.
        """
        self._owns_server = False
        self._courier.end(self.ask_timeout)
        self._courier.check(total=True)

    def __enter__(self) -> Pachka:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        """Stop the server this handle started (else close); on an exception, that
        exception goes on, and a failure to stop is logged."""
        finish = self.stop if self._owns_server else self.close
        if error is None:
            finish()
            return
        try:
            finish()
        except Exception:
            log.exception("%s: could not finish while leaving on %r", self, error)

    def _ask(self, request: Any, reply_type: type[R]) -> R:
        if self._courier.trouble:
            self._hear(NotStarted)
        try:
            return self._courier.call(request, reply_type, self.ask_timeout)
        except ActorGone:
            self._hear(NotStarted)
            raise

    def _hear(self, gone: Any) -> None:
        """Raise what this call must hear first (lost messages, a crash of the thread),
        then `gone(why)` if the server stopped or is gone (None: nothing more)."""
        self._courier.check()
        why = self._courier.gone
        if why is not None and gone is not None:
            raise gone(why)

    def __repr__(self) -> str:
        return f"Pachka({self.address})"
