"""`Pachka`: the handle a program outside the actors uses to start and feed a server."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from thespian.actors import ActorAddress, ActorExitRequest, ActorSystem, PoisonMessage

from .config import parse_options
from .core import Accepted, ServerStatus, Stopped
from .errors import ActorTimeout, PachkaError
from .messages import (
    GetStatus,
    NotStarted,
    SendMessage,
    SendMessages,
    Started,
    StartServer,
    Stop,
)
from .server import PachkaServer

R = TypeVar("R")


class Pachka:
    """A handle to a running Pachka server; cheap to make.

    Each call is one Thespian `ask`, so it blocks the calling thread until the
    server answers (or `ask_timeout` seconds pass: `ActorTimeout`).
    """

    def __init__(self, system: ActorSystem, address: ActorAddress, *,
                 ask_timeout: float | None = 60.0) -> None:
        self.system = system
        self.address = address
        self.ask_timeout = ask_timeout

    @classmethod
    def start(cls, *, system: ActorSystem, **options: Any) -> Pachka:
        """Validate `options` (see docs/options.md), start the server and wait until it runs.

        Raises `ConfigError` before any actor starts, `AlreadyStarted` if `name` is taken.
        """
        config = parse_options(options)
        address = system.createActor(PachkaServer, globalName=config.name)
        handle = cls(system, address)
        handle._ask(StartServer(config), Started, handle.ask_timeout)
        return handle

    @classmethod
    def connect(cls, system: ActorSystem, server: str | ActorAddress) -> Pachka:
        """A handle to a started server, by its `name` or its actor address."""
        if not isinstance(server, str):
            return cls(system, server)
        address = system.createActor(PachkaServer, globalName=server)
        handle = cls(system, address)
        try:
            handle.status()
        except NotStarted:
            # createActor with a free globalName made a blank server: do not leave it behind.
            system.tell(address, ActorExitRequest())
            raise NotStarted(f"no Pachka server named {server!r} is started") from None
        return handle

    def send_message(self, message: Any) -> None:
        """Queue one message; raises `Overloaded` when the queue is full or the server stops."""
        accepted = self._ask(SendMessage(message), Accepted, self.ask_timeout)
        if accepted.refused is not None:
            raise accepted.refused

    def send_messages(self, messages: Iterable[Any]) -> int:
        """Queue what fits of `messages`, in order; returns how many were accepted."""
        return self._ask(SendMessages(list(messages)), Accepted, self.ask_timeout).count

    def status(self) -> ServerStatus:
        return self._ask(GetStatus(), ServerStatus, self.ask_timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Block until every accepted message is delivered or drained and the server exits.

        `timeout` (seconds, None: forever) bounds the wait, not the drain: on
        `ActorTimeout` the server goes on draining.
        """
        self._ask(Stop(), Stopped, timeout)

    def _ask(self, request: Any, reply_type: type[R], timeout: float | None) -> R:
        """One round trip (`timeout` None: forever); an exception as the reply is raised."""
        reply = self.system.ask(self.address, request, timeout)
        if isinstance(reply, reply_type):
            return reply
        if isinstance(reply, Exception):
            raise reply
        if reply is None:
            raise ActorTimeout(f"no reply to {type(request).__name__} within {timeout} s")
        if isinstance(reply, PoisonMessage):
            raise PachkaError(f"the server failed on {type(request).__name__}: {reply.details}")
        raise PachkaError(f"unexpected reply to {type(request).__name__}: {reply!r}")

    def __repr__(self) -> str:
        return f"Pachka({self.address})"
