"""`Credits`: the room one producer holds at a Pachka server, and what it took under it.

A producer that buffers (the handle's courier, `BufferedProducer`) may take a
message only under room the server reserved for it (`RequestCredit` ->
`Granted`), so that overload stays exact; it ships what it took as one
`SendMessages(messages, credit)`, which the server always accepts. The rules of
that are written here once, with no Thespian, no clock and no I/O (times are
passed in); a shell performs the `Ship` and `AskRoom` actions it drains from
`outbox`, in order, and reports back what the server answered:

- A message is taken only under held room. Room has two dimensions, messages
  and bytes (a message costs 1 and its size; a grant's bytes are None, unlimited,
  when the server has no `critical_queue_bytes`). A message that does not fit the
  grant's bytes ships the grant (or gives it back, when empty) and asks for room
  with its size, which the server grants only if the message fits: overload stays
  exact in bytes too. A message larger than the server's `max_batch_bytes` (said
  by its grants) is refused at once with `MessageTooLarge`, taken by no grant.
- The grant being filled ships when its room is used up, `linger` after its
  first message, or on `flush`; shipments leave in the order the messages were
  taken. With `ahead`, once half its room is used the next grant is asked for
  ahead of need (after the shipment that used the room): a producer that cannot
  wait (an actor) then rarely has to. Otherwise room is asked for when a message
  needs it: the server counts a refused request as a refused message. One
  request is in flight at a time.
- With `rides` (a handle, which ships every `linger`), a shipment of taken
  messages that leaves no room held and no request in flight asks for the next
  grant itself (`Ship.ask`), answered in its reply: a producer that keeps sending
  waits for one round trip per grant, not for the shipment's and then a
  request's. Such a grant unused for `linger` goes back: a producer that stopped
  sending holds its room no longer than its messages would have lingered. Not
  on `flush` and `close`: afterwards nothing is held (`flush` gives back an unused
  grant too).
- A grant held unused for `idle` seconds is given back (an empty shipment): an
  idle producer holds no room, and a stopping server does not wait for it.
- A refusal matters only when the request was made holding no room: it is
  raised once by the next `take` that finds none, which then asks again. (A
  request made ahead is answered counting the room still held, so its refusal
  says little; the next request, made after the shipment, will be exact. One
  made with a shipment is answered without a grant, and no refusal, when there
  is no room: the server counts no refused message, and the next `take` asks.)
- A request given up on (no answer in time) is forgotten; a grant answering it
  later is given back at once, and so is every grant after `close`.
- Every message taken is either held, or confirmed by the server, or counted in
  `lost` with the reason: `taken == held + unconfirmed + confirmed + lost`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import MessageTooLarge


@dataclass(frozen=True)
class Ship:
    """Send `messages` as `SendMessages(messages, credit)`, asking with ref `ref`; no
    messages gives the grant's room back. `ask`: room for that many messages more is asked
    for with it (`size`: the bytes of the message that needs it), answered in its reply."""

    ref: int
    credit: int
    messages: list[Any]
    ask: int = 0
    size: int = 0


@dataclass(frozen=True)
class AskRoom:
    """Send `RequestCredit(count, wait, size)`, asking with ref `ref`."""

    ref: int
    count: int
    wait: float
    size: int = 0  # the bytes of the message that needs the room (0: any room will do)


Action = Ship | AskRoom


@dataclass(eq=False)
class _Grant:
    credit: int
    count: int  # messages it may still take
    bytes: int | None  # bytes it may still take (None: no limit)
    due: float  # when it ships (linger after its first message) or goes back unused
    messages: list[Any] = field(default_factory=list)

    def put(self, message: Any, size: int) -> None:
        """Take the message into this grant's room (what `add` and `take` share)."""
        self.messages.append(message)
        self.count -= 1
        if self.bytes is not None:
            self.bytes = max(0, self.bytes - size)


class Credits:
    """One producer's grants, its request for room and its shipments (module docstring)."""

    def __init__(self, size: int, linger: float, idle: float, refs: Callable[[], int], *,
                 ahead: bool, rides: bool = False) -> None:
        """`size`: the room asked for; `refs`: unique refs, for requests and shipments."""
        self.size, self.linger, self.idle, self._refs = size, linger, idle, refs
        self.ahead = ahead  # ask for the next grant once half of one is used
        self.rides = rides  # a shipment asks for the next grant (module docstring)
        self.outbox: list[Action] = []
        self.current: _Grant | None = None  # the grant being filled
        self.spare: _Grant | None = None  # the next one, asked for ahead of need
        self.asking: int | None = None  # the ref of the request for room in flight
        self.tentative = False  # ...ahead or with a shipment: its refusal is not raised
        self.riding = False  # ...with a shipment (the request's ref is the shipment's)
        self.given_up: set[int] = set()  # requests no longer waited for
        self.refused: Exception | None = None  # raised once by the next `take` with no room
        self.closed = False  # hold nothing: every grant goes back until the next `take`
        self.unconfirmed: dict[int, int] = {}  # ref of a shipment: its number of messages
        self.lost = 0
        self.why: list[str] = []  # the reasons of `lost`, each once
        #: What the last grant said of the server's byte limits: whether `take` needs sizes
        #: (the shell measures messages only then), and its `max_batch_bytes`.
        self.measures = False
        self.max_bytes: int | None = None

    @property
    def buffered(self) -> int:
        return len(self.current.messages) if self.current else 0

    @property
    def pending(self) -> int:
        """Messages taken and neither confirmed nor lost yet."""
        return self.buffered + sum(self.unconfirmed.values())

    def drain(self) -> list[Action]:
        actions, self.outbox = self.outbox, []
        return actions

    def add(self, message: Any, size: int) -> bool:
        """`take` where it decides nothing but the taking, without its arguments: a grant is
        being filled, this is neither its first message (no clock starts) nor its last (no
        shipment), it fits the grant's bytes and a batch, and no request is due. The hot path
        of a handle; False: call `take`."""
        grant = self.current
        if grant is None or grant.count < 2 or not grant.messages or self.ahead or (
                grant.bytes is not None and size >= grant.bytes) or (
                self.max_bytes is not None and size > self.max_bytes):
            return False
        grant.put(message, size)
        return True

    def take(self, message: Any, size: int, now: float, wait: float = 0.0) -> bool:
        """Take `message` (1 message, `size` bytes) under held room: True.

        False: no room is held, and a request for it is in flight (asked here,
        with `wait` seconds to wait at the server, if none was). Raises the
        refusal of the last request instead, once; and `MessageTooLarge` for a
        message no batch of the server could hold.
        """
        if self.max_bytes is not None and size > self.max_bytes:
            raise MessageTooLarge(size, self.max_bytes)
        self.closed = False
        grant = self.current
        while grant is not None and grant.bytes is not None and size > grant.bytes:
            self._ship(grant, size)  # full in bytes (an empty one: its room goes back)
            grant = self.current
        if grant is None:
            if self.refused is not None:
                refused, self.refused = self.refused, None
                raise refused
            self.reserve(wait, size)
            return False
        if not grant.messages:
            grant.due = now + self.linger
        grant.put(message, size)
        if not grant.count or grant.bytes == 0:
            self._ship(grant)
        current = self.current
        if self.ahead and self.asking is None and (
                current is None or 2 * current.count <= self.size):
            self.reserve()
        return True

    def reserve(self, wait: float = 0.0, size: int = 0) -> None:
        """Ask for room now (for a message of `size` bytes first), unless a request is in
        flight or two grants are held (an older refusal no longer says how full the
        server is)."""
        if self.asking is None and self.spare is None:
            self.asking, self.refused, self.riding = self._refs(), None, False
            self.tentative = self.current is not None
            self.outbox.append(AskRoom(self.asking, self.size, wait, size))

    def answered(self, ref: int, now: float, credit: int | None, count: int = 0,
                 refused: Exception | None = None, size: int | None = None,
                 max_bytes: int | None = None) -> bool:
        """The server answered request `ref`: room for `count` messages (and `size` bytes)
        under `credit`, or `refused`; `max_bytes`: its `max_batch_bytes`. False: `ref` is
        not one of ours."""
        late, idle = ref in self.given_up, self.idle
        if late:
            self.given_up.discard(ref)
        elif ref == self.asking:
            self.asking = None
            if self.riding:
                idle = min(self.linger, idle)
        else:
            return False
        if credit is None:
            if not (late or self.closed or self.tentative):
                self.refused = refused
            return True
        self.measures, self.max_bytes = size is not None or max_bytes is not None, max_bytes
        if late or self.closed:
            self._ship(_Grant(credit, count, size, now))
        elif self.current is None:
            self.current = _Grant(credit, count, size, now + idle)
        else:
            self.spare = _Grant(credit, count, size, now + self.idle)
        return True

    def give_up(self, ref: int, error: Exception) -> None:
        """No answer to request `ref` in time: forget it (`error` is raised like a refusal)."""
        if ref == self.asking:
            self.asking = None
            self.given_up.add(ref)
            if not (self.closed or self.tentative):
                self.refused = error

    def due(self, now: float) -> None:
        """Ship the grants whose time has come: lingered enough, or unused too long."""
        for grant in (self.current, self.spare):
            if grant is not None and grant.due <= now:
                self._ship(grant)

    def deadline(self) -> float | None:
        """When `due` next has something to do (None: nothing is held)."""
        return min((g.due for g in (self.current, self.spare) if g is not None), default=None)

    def flush(self) -> None:
        """Ship what is taken now, asking for nothing; with `rides`, an unused grant goes
        back too (it came with a shipment: the producer asked for it no more than now)."""
        if self.current is not None and (self.current.messages or self.rides):
            self._ship(self.current, ride=False)

    def close(self) -> None:
        """Ship what is taken, give back all room, and every grant that comes, until `take`
        (which then asks afresh: an older refusal says nothing any more)."""
        self.closed, self.refused = True, None
        for grant in (self.current, self.spare):
            if grant is not None:
                self._ship(grant)

    def shipped(self, ref: int, accepted: int, why: str = "") -> bool:
        """The server took `accepted` messages of shipment `ref`; the rest are lost for
        `why`. False: `ref` is not one of ours."""
        if ref not in self.unconfirmed:
            return False
        self._lose(self.unconfirmed.pop(ref) - accepted, why)
        return True

    def lose_all(self, why: str) -> int:
        """No traffic is possible any more: what is held or unconfirmed is lost; how many."""
        count = self.pending
        self._lose(count, why)
        self.current = self.spare = self.asking = self.refused = None
        self.unconfirmed.clear()
        self.outbox.clear()
        return count

    def _lose(self, count: int, why: str) -> None:
        if count > 0:
            self.lost += count
            if why not in self.why:
                self.why.append(why)

    def _ship(self, grant: _Grant, size: int = 0, ride: bool = True) -> None:
        """`size`: the bytes of the message that needs the next grant, if one is asked for."""
        if grant is self.current:
            self.current, self.spare = self.spare, None
        elif grant is self.spare:
            self.spare = None
        ref, ask = self._refs(), 0
        if ride and self.rides and grant.messages and not self.closed \
                and self.current is None and self.asking is None:
            self.asking, self.refused, self.tentative, self.riding = ref, None, True, True
            ask = self.size
        self.unconfirmed[ref] = len(grant.messages)
        self.outbox.append(Ship(ref, grant.credit, grant.messages, ask, size if ask else 0))
