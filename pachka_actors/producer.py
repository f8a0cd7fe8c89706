"""`BufferedProducer`: an actor feeds a Pachka server without a round trip per message.

An actor cannot block on a reply, and one `SendMessage` per message costs a
Thespian hop each (about a millisecond on multiprocTCPBase). So the producer
does inside an actor what the outside handle does (pachka.py): it holds room
reserved at the server (`RequestCredit`), appends messages locally while that
room lasts, and ships them as one `SendMessages(list, credit)` when the room is
used up or `linger` after the first, asking for the next room ahead of need. A
message is only taken under room the server reserved, so overload stays exact
and a taken message is always accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, Protocol

from thespian.actors import ActorAddress, ActorExitRequest, PoisonMessage, WakeupMessage

from ._ask import Answer, Ask, new_ref
from ._courier import check_picklable
from .config import DEFAULT_LINGER, HandleOptions
from .errors import ActorTimeout, ConfigError, Overloaded, PachkaError
from .messages import Accepted, Granted, RequestCredit, SendMessages

log = logging.getLogger(__name__)

#: Seconds a grant may stay unused before it is given back: an idle producer then holds no
#: room at the server (a stopping server waits for open grants), long before `credit_timeout`.
IDLE_GRANT = 1.0

_Kind = Literal["linger", "idle", "answer"]


class ProducerActor(Protocol):
    """What the producer uses of the Thespian `Actor` that holds it."""

    def send(self, targetAddr: ActorAddress, msg: Any) -> None: ...

    def wakeupAfter(self, timePeriod: timedelta, payload: Any = None) -> None: ...


@dataclass(frozen=True)
class _Tick:
    """The payload of the producer's wakeups (never the actor's own): ship the grant
    `token` ("linger"), give it back if still unused ("idle"), or stop waiting for the
    answer to request `token` ("answer")."""

    owner: int
    kind: _Kind
    token: int


@dataclass(eq=False)
class _Grant:
    credit: int
    room: int
    messages: list[Any] = field(default_factory=list)


class BufferedProducer:
    """Buffers an actor's messages under room reserved at `server`; see docs/actors.md.

    The actor passes every message it gets to `receive` first. `send` returns
    True when the message is taken (it will be delivered, in order), False when
    no room is held yet (room is being asked for, and `on_ready` is called once
    the answer comes), and raises `Overloaded` when the server refused room.
    Creating it asks for the first room at once.
    """

    def __init__(self, actor: ProducerActor, server: ActorAddress, *,
                 linger: float = DEFAULT_LINGER, buffer_size: int = 1000,
                 ask_timeout: float | None = 60.0,
                 on_ready: Callable[[], None] | None = None) -> None:
        options = HandleOptions(ask_timeout, linger, buffer_size)
        if options.linger is None:
            raise ConfigError("linger", "a producer always buffers: give seconds (0 ships "
                                        "once the actor's handler returns)")
        self.server = server
        self.linger: float = options.linger
        self.buffer_size = options.buffer_size
        self.ask_timeout = options.ask_timeout
        self.on_ready = on_ready
        self._actor = actor
        self._id = new_ref()
        self._current: _Grant | None = None  # the grant being filled
        self._spare: _Grant | None = None  # the next one, asked for ahead of need
        self._asking: int | None = None  # the ref of the request for room in flight
        self._late: set[int] = set()  # requests given up on: their room is given back
        self._shipped: dict[int, int] = {}  # ref of a shipment: its number of messages
        self._refused: PachkaError | None = None
        self._waiting = False  # `send` returned False: call `on_ready` at the next answer
        self._closed = False
        self._ask()

    @property
    def buffered(self) -> int:
        """Messages taken and not yet shipped."""
        return len(self._current.messages) if self._current else 0

    @property
    def unconfirmed(self) -> int:
        """Messages shipped whose `Accepted` has not come back yet."""
        return sum(self._shipped.values())

    def send(self, message: Any) -> bool:
        """Take `message` under reserved room (True), or say there is none yet (False).

        Raises `Overloaded` (the server's reason; `terminating` when it stops or
        this producer's actor exits) once per refusal: the next call asks again.
        Raises `ActorTimeout` when a request for room got no answer within
        `ask_timeout`, and `UnpicklableMessage` for a message that cannot cross
        processes. Nothing is taken in any of these cases.
        """
        check_picklable(message)
        grant = self._current
        if grant is None:
            if self._closed:
                raise Overloaded("the producer is closed: its actor exits", terminating=True)
            if self._refused is not None:
                refused, self._refused = self._refused, None
                raise refused
            if self._asking is None:
                self._ask()
            self._waiting = True
            return False
        if not grant.messages:
            self._tick("linger", grant.credit, self.linger)
        grant.messages.append(message)
        grant.room -= 1
        if not grant.room:
            self._ship(grant)
        elif 2 * grant.room <= self.buffer_size:
            self._ask_ahead()
        return True

    def flush(self) -> None:
        """Ship what is buffered now; `unconfirmed` drops when the server has it."""
        if self._current is not None and self._current.messages:
            self._ship(self._current)

    def close(self) -> None:
        """Ship what is buffered and give back unused room; `send` raises from now on.

        `receive` calls it on `ActorExitRequest`, so buffered messages leave before the
        actor's exit completes (Thespian drains what an exiting actor sent).
        """
        self._closed = True
        for grant in (self._current, self._spare):
            if grant is not None:
                self._ship(grant)

    def receive(self, message: Any) -> bool:
        """Handle the server's answers and the producer's wakeups; True if `message` was one.

        On `ActorExitRequest` it ships the buffer (`close`) and returns False, so
        the actor's own exit handling runs too.
        """
        if isinstance(message, Answer):
            return self._answered(message.ref, message.reply)
        if isinstance(message, WakeupMessage):
            tick = message.payload
            if not (isinstance(tick, _Tick) and tick.owner == self._id):
                return False
            self._ticked(tick)
            return True
        if isinstance(message, PoisonMessage) and isinstance(message.poisonMessage, Ask):
            failed = message.poisonMessage
            return self._answered(failed.ref, PachkaError(
                f"the server failed on {type(failed.request).__name__}: {message.details}"))
        if isinstance(message, ActorExitRequest):
            self.close()
        return False

    # ---- inside -------------------------------------------------------------------------

    def _ask(self) -> None:
        ref = self._asking = new_ref()
        self._refused = None  # an older refusal no longer says how full the server is
        self._actor.send(self.server, Ask(ref, RequestCredit(self.buffer_size)))
        if self.ask_timeout is not None:
            self._tick("answer", ref, self.ask_timeout)

    def _ask_ahead(self) -> None:
        if self._spare is None and self._asking is None and not self._closed:
            self._ask()

    def _ship(self, grant: _Grant) -> None:
        """Send the grant's messages under its credit (none: the room is given back)."""
        if grant is self._current:
            self._current, self._spare = self._spare, None
        elif grant is self._spare:
            self._spare = None
        ref = new_ref()
        self._shipped[ref] = len(grant.messages)
        self._actor.send(self.server, Ask(ref, SendMessages(grant.messages, grant.credit)))
        if grant.messages:  # busy: keep room ready for the next message
            self._ask_ahead()

    def _tick(self, kind: _Kind, token: int, seconds: float) -> None:
        self._actor.wakeupAfter(timedelta(seconds=seconds), payload=_Tick(self._id, kind, token))

    def _ticked(self, tick: _Tick) -> None:
        if tick.kind != "answer":
            for grant in (self._current, self._spare):
                if grant is not None and grant.credit == tick.token and (
                        tick.kind == "linger" or not grant.messages):
                    self._ship(grant)
                    return
        elif tick.token == self._asking:
            self._asking = None
            self._late.add(tick.token)
            self._refused = ActorTimeout(f"the Pachka server at {self.server} did not answer "
                                         f"a request for room within {self.ask_timeout} s")
            self._ready()

    def _answered(self, ref: int, reply: Any) -> bool:
        if ref == self._asking:
            self._asking = None
            self._granted(reply)
        elif ref in self._shipped:
            count = self._shipped.pop(ref)
            if not (isinstance(reply, Accepted) and reply.count == count):
                log.error("%d messages shipped to %s under a credit were not all taken (%r): "
                          "the server stopped or failed first", count, self.server, reply)
        elif ref in self._late:
            self._late.discard(ref)
            if isinstance(reply, Granted) and reply.credit is not None:
                self._ship(_Grant(reply.credit, reply.count))
        else:
            return False
        return True

    def _granted(self, reply: Any) -> None:
        if isinstance(reply, Granted) and reply.credit is not None:
            grant = _Grant(reply.credit, reply.count)
            if self._closed:
                self._ship(grant)
            else:
                if self._current is None:
                    self._current = grant
                else:
                    self._spare = grant
                self._tick("idle", grant.credit, IDLE_GRANT)
        elif isinstance(reply, Granted) and reply.refused is not None:
            self._refused = reply.refused
        else:
            self._refused = reply if isinstance(reply, PachkaError) else PachkaError(
                f"unexpected answer to RequestCredit: {reply!r}")
        self._ready()

    def _ready(self) -> None:
        if self._waiting:
            self._waiting = False
            if self.on_ready is not None:
                self.on_ready()
