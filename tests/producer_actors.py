"""A producer actor for the `BufferedProducer` tests; module-level so that it pickles.

It sends what it is told to, in order, through its producer, and answers
`Report` with what came of it, so that a test observes the actor by asking.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from thespian.actors import Actor, ActorAddress

from pachka_actors import BufferedProducer, PachkaError


@dataclass(frozen=True)
class Open:
    """Create the producer; answered with "open", or with the `ConfigError`."""

    server: ActorAddress
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Produce:
    """Send these messages, one by one, in order (after any still pending)."""

    messages: list[Any]


@dataclass(frozen=True)
class Report:
    """Answered with `Produced`."""


@dataclass(frozen=True)
class Produced:
    accepted: list[Any]
    pending: int  # told to send, not taken yet
    buffered: int
    unconfirmed: int
    errors: list[str]  # "ExceptionType: text", for each refusal `send` raised

    @property
    def settled(self) -> bool:
        """Nothing pending, buffered or on its way."""
        return not (self.pending or self.buffered or self.unconfirmed)


@dataclass(frozen=True)
class Flush:
    """Flush, and answer "flushed" once the server confirmed every shipment."""


class Producer(Actor):  # type: ignore[misc]
    """Sends through a `BufferedProducer`; after a refusal it stops sending until told again."""

    producer: BufferedProducer | None = None

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if self.producer is not None and self.producer.receive(message):
            self._answer_flush()
            return
        if isinstance(message, Open):
            self.accepted: list[Any] = []
            self.pending: deque[Any] = deque()
            self.errors: list[str] = []
            self.flushers: list[ActorAddress] = []
            try:
                self.producer = BufferedProducer(self, message.server, on_ready=self._pump,
                                                 **message.options)
            except PachkaError as exc:
                self.send(sender, exc)
                return
            self.send(sender, "open")
        elif isinstance(message, Produce):
            self.pending.extend(message.messages)
            self._pump()
        elif message == "unpicklable":
            self.pending.append(threading.Lock())
            self._pump()
        elif isinstance(message, Report):
            assert self.producer is not None
            self.send(sender, Produced(list(self.accepted), len(self.pending),
                                       self.producer.buffered, self.producer.unconfirmed,
                                       list(self.errors)))
        elif isinstance(message, Flush):
            assert self.producer is not None
            self.producer.flush()
            self.flushers.append(sender)
            self._answer_flush()

    def _pump(self) -> None:
        assert self.producer is not None
        while self.pending:
            try:
                if not self.producer.send(self.pending[0]):
                    return  # on_ready calls again
            except PachkaError as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                self.pending.clear()
                return
            self.accepted.append(self.pending.popleft())

    def _answer_flush(self) -> None:
        if self.flushers and self.producer is not None and not self.producer.unconfirmed:
            for flusher in self.flushers:
                self.send(flusher, "flushed")
            self.flushers.clear()
