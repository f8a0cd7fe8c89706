"""`BufferedProducer`: an actor feeds a Pachka server without a round trip per message.

An actor cannot block on a reply, and one `SendMessage` per message costs a
Thespian hop each (about a millisecond on multiprocTCPBase). So the producer
does inside an actor what the outside handle does (pachka.py), by the same
rules (`Credits`, `_credits.py`): it holds room reserved at the server
(`RequestCredit`), appends messages locally while that room lasts, and ships
them as one `SendMessages(list, credit)` when the room is used up or `linger`
after the first, asking for the next room ahead of need. A message is only
taken under room the server reserved, so overload stays exact and a taken
message is always accepted. Where the handle waits, the producer returns False
and calls `on_ready` when the answer comes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from thespian.actors import ActorAddress, ActorExitRequest, PoisonMessage, WakeupMessage

from ._ask import Answer, Ask, new_ref
from ._courier import IDLE_GRANT, check_picklable
from ._credits import Credits, Ship
from .config import HANDLE_OPTIONS, HandleOptions, with_options
from .errors import ActorTimeout, ConfigError, Overloaded, PachkaError, plural
from .messages import Accepted, Granted, RequestCredit, SendMessages
from .sink import Sink, sizer

log = logging.getLogger(__name__)


class ProducerActor(Protocol):
    """What the producer uses of the Thespian `Actor` that holds it."""

    def send(self, targetAddr: ActorAddress, msg: Any) -> None: ...

    def wakeupAfter(self, timePeriod: timedelta, payload: Any = None) -> None: ...


@dataclass(frozen=True)
class _Tick:
    """The payload of the producer's wakeups (never the actor's own): stop waiting for the
    answer to request `ref`, or (None) see what `Credits.due` ships at `at`."""

    owner: int
    ref: int | None
    at: float = 0.0


class BufferedProducer:
    """Buffers an actor's messages under room reserved at `server`; see docs/actors.md.

    The actor passes every message it gets to `receive` first. `send` returns
    True when the message is taken (it will be delivered, in order), False when
    no room is held yet (room is being asked for, and `on_ready` is called once
    the answer comes), and raises `Overloaded` when the server refused room.
    Creating it asks for the first room at once. `sink` and `server_value`: the
    server's, when its sink overrides `Sink.message_size` (as `Pachka.connect`).
    """

    @with_options((HandleOptions, HANDLE_OPTIONS))
    def __init__(self, actor: ProducerActor, server: ActorAddress, *,
                 on_ready: Callable[[], None] | None = None, sink: Sink | None = None,
                 server_value: Any = None, **options: Any) -> None:
        handle = HandleOptions.parse(options)
        if handle.linger is None:
            raise ConfigError("linger", "a producer always buffers: give seconds (0 ships "
                                        "once the actor's handler returns)")
        self.server, self.on_ready, self.ask_timeout = server, on_ready, handle.ask_timeout
        self._actor = actor
        self._size = sizer(sink, server_value)
        self._id = new_ref()
        self._credits = Credits(handle.buffer_size, handle.linger, IDLE_GRANT, new_ref,
                                ahead=True)
        self._wake: float | None = None  # the earliest wakeup asked for `due`
        self._waiting = False  # `send` returned False: call `on_ready` at the answer
        self._closed = False
        self._credits.reserve()
        self._perform()

    @property
    def buffered(self) -> int:
        """Messages taken and not yet shipped."""
        return self._credits.buffered

    @property
    def unconfirmed(self) -> int:
        """Messages shipped whose `Accepted` has not come back yet."""
        return sum(self._credits.unconfirmed.values())

    def send(self, message: Any) -> bool:
        """Take `message` under reserved room (True), or say there is none yet (False).

        Raises `Overloaded` (the server's reason; `terminating` when it stops or
        this producer's actor exits) once per refusal: the next call asks again.
        Raises `ActorTimeout` when a request for room got no answer within
        `ask_timeout`, and `UnpicklableMessage` for a message that cannot cross
        processes, and `MessageTooLarge` for one larger than the server's
        `max_batch_bytes`. Nothing is taken in any of these cases.
        """
        check_picklable(message)
        if self._closed:
            raise Overloaded("the producer is closed: its actor exits", terminating=True)
        credits = self._credits
        try:
            taken = credits.take(message, self._size(message) if credits.measures else 0,
                                 time.monotonic())
        finally:
            if credits.outbox or credits.buffered == 1:  # else nothing to send or to time
                self._perform()
        self._waiting = not taken
        return taken

    def flush(self) -> None:
        """Ship what is buffered now; `unconfirmed` drops when the server has it."""
        self._credits.flush()
        self._perform()

    def close(self) -> None:
        """Ship what is buffered and give back unused room; `send` raises from now on.

        `receive` calls it on `ActorExitRequest`, so buffered messages leave before the
        actor's exit completes (Thespian drains what an exiting actor sent).
        """
        self._closed = True
        self._credits.close()
        self._perform()

    def receive(self, message: Any) -> bool:
        """Handle the server's answers and the producer's wakeups; True if `message` was one.

        On `ActorExitRequest` it ships the buffer (`close`) and returns False, so
        the actor's own exit handling runs too.
        """
        credits, now, lost = self._credits, time.monotonic(), self._credits.lost
        if isinstance(message, PoisonMessage) and isinstance(message.poisonMessage, Ask):
            failed = message.poisonMessage
            message = Answer(failed.ref, PachkaError(
                f"the server failed on {type(failed.request).__name__}: {message.details}"))
        if isinstance(message, Answer):
            reply = message.reply
            if isinstance(reply, Granted):
                mine = credits.answered(message.ref, now, reply.credit, reply.count,
                                        reply.refused, reply.bytes, reply.max_batch_bytes)
            else:
                refused = reply if isinstance(reply, Exception) else PachkaError(
                    f"unexpected answer from {self.server}: {reply!r}")
                mine = credits.answered(message.ref, now, None, 0, refused) or credits.shipped(
                    message.ref, reply.count if isinstance(reply, Accepted) else 0, "")
                if credits.lost > lost:
                    log.error("%s shipped to %s under a credit not taken (%r): the server "
                              "stopped or failed first", plural(credits.lost - lost, "message"),
                              self.server, reply)
        elif isinstance(message, WakeupMessage) and isinstance(message.payload, _Tick) \
                and message.payload.owner == self._id:
            tick, mine = message.payload, True
            if tick.ref is not None:
                credits.give_up(tick.ref, ActorTimeout(
                    f"the Pachka server at {self.server} did not answer a request for room "
                    f"within {self.ask_timeout} s"))
            elif tick.at == self._wake:
                self._wake = None
            credits.due(now)
        else:
            if isinstance(message, ActorExitRequest):
                self.close()
            return False
        if mine:
            self._perform()
            if self._waiting and credits.asking is None:
                self._waiting = False
                if self.on_ready is not None:
                    self.on_ready()
        return mine

    def _perform(self) -> None:
        """Send what the credits decided, and ask for a wakeup when something falls due."""
        for action in self._credits.drain():
            if isinstance(action, Ship):
                request: Any = SendMessages(action.messages, action.credit)
            else:
                request = RequestCredit(action.count, action.wait, action.size)
            self._actor.send(self.server, Ask(action.ref, request))
            if not isinstance(action, Ship) and self.ask_timeout is not None:
                self._tick(_Tick(self._id, action.ref), self.ask_timeout)
        due = self._credits.deadline()
        if due is not None and (self._wake is None or due < self._wake):
            self._wake = due
            self._tick(_Tick(self._id, None, due), max(0.0, due - time.monotonic()))

    def _tick(self, tick: _Tick, seconds: float) -> None:
        self._actor.wakeupAfter(timedelta(seconds=seconds), payload=tick)
