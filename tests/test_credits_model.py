"""Hypothesis stateful test of the credit rules (`_credits.py`) both producers follow.

Any interleaving of takes, answers (grants, refusals, late ones), requests given
up, time passing, flushes, closes, confirmations and the server vanishing keeps
the promises: a message is taken only under room granted; nothing taken is lost
or duplicated unless counted lost; shipments keep the order of taking; every
grant is shipped or given back exactly once, or still held. With `rides`, a
shipment's own request for the next grant is one more request, answered like any
(its refusal is never raised).
"""

from __future__ import annotations

import copy
import itertools

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pachka_actors._credits import AskRoom, Credits, Ship
from pachka_actors.errors import MessageTooLarge, Overloaded


class CreditsModel(RuleBasedStateMachine):
    credits: Credits

    @initialize(size=st.integers(1, 6), linger=st.sampled_from([0.0, 1.0, 5.0]),
                idle=st.sampled_from([0.5, 3.0]), bytes_limited=st.booleans(),
                ahead=st.booleans(), rides=st.booleans())
    def start(self, size: int, linger: float, idle: float, bytes_limited: bool,
              ahead: bool, rides: bool) -> None:
        self.credits = Credits(size, linger, idle, itertools.count(1).__next__, ahead=ahead,
                               rides=rides)
        self.ahead, self.rides, self.linger = ahead, rides, linger
        self.bytes_limited = bytes_limited
        self.now = 0.0
        self.taken: list[int] = []  # messages are 0, 1, 2, ... in the order taken
        self.sizes: dict[int, int] = {}
        self.shipped: list[int] = []  # every message shipped, in shipping order
        self.dropped: list[int] = []  # held when the server vanished
        self.granted: dict[int, tuple[int, int | None]] = {}  # credit: (count, bytes)
        self.shipped_credits: set[int] = set()
        self.asks: dict[int, AskRoom] = {}  # sent, not answered yet
        self.needed: set[int] = set()  # asks sent holding no room (their refusal counts)
        self.riding: set[int] = set()  # asks made by a shipment (its ref)
        self.given_up: set[int] = set()
        self.ships: dict[int, Ship] = {}  # sent, not confirmed yet
        self.confirmed = 0
        self.lost = 0
        self.next_credit = 1000
        self.gone = False
        self.closed = False
        self.refusal_due = False  # a refusal that the next take finding no room must raise
        self.max_bytes: int | None = None  # the server's max_batch_bytes, as its grants say

    def perform(self) -> None:
        """What a shell does after every call: send the actions, in order."""
        for action in self.credits.drain():
            if isinstance(action, AskRoom):
                assert len(self.asks.keys() - self.given_up) == 0, "one request at a time"
                self.asks[action.ref] = action
                if self.credits.current is None:
                    self.needed.add(action.ref)
                continue
            if action.ask:
                assert self.rides and action.messages and not self.closed, \
                    "a shipment asked for room it should not"
                assert len(self.asks.keys() - self.given_up) == 0, "one request at a time"
                assert action.ask == self.credits.size
                self.asks[action.ref] = AskRoom(action.ref, action.ask, 0.0, action.size)
                self.riding.add(action.ref)
            assert action.credit in self.granted, "shipped under a credit never granted"
            assert action.credit not in self.shipped_credits, "a grant shipped twice"
            count, room = self.granted[action.credit]
            assert len(action.messages) <= count, "more messages than the grant's room"
            if room is not None:
                assert sum(self.sizes[m] for m in action.messages) <= room, \
                    "more bytes than the grant's room"
            self.shipped_credits.add(action.credit)
            self.shipped += action.messages
            self.ships[action.ref] = action

    # ---- the producer's side -------------------------------------------------------------

    @precondition(lambda self: not self.gone)
    @rule(size=st.integers(0, 5), wait=st.sampled_from([0.0, 2.0]), fast=st.booleans())
    def take(self, size: int, wait: float, fast: bool) -> None:
        """`fast`: as the handle does, `add` first, and `take` only if it declines."""
        held = self.credits.current is not None
        message = len(self.taken)
        if not self.bytes_limited:
            size = 0
        if self.max_bytes is not None and size > self.max_bytes:
            assert not (fast and self.credits.add(message, size)), "add took a message too large"
            with pytest.raises(MessageTooLarge):
                self.credits.take(message, size, self.now, wait)
            assert not self.credits.outbox, "a message too large for any batch asked for room"
            return
        oracle = copy.deepcopy(self.credits)
        if fast and self.credits.add(message, size):
            assert oracle.take(message, size, self.now, wait) and not oracle.outbox, \
                "add took where take decides more"
            assert vars(oracle.current) == vars(self.credits.current), "add took otherwise"
            self.taken.append(message)
            self.sizes[message] = size
            return
        self.closed = False  # a take opens again
        try:
            taken = self.credits.take(message, size, self.now, wait)
        except Overloaded:
            assert self.refusal_due, "a refusal raised that no longer says anything"
            assert self.credits.current is None, "a refusal raised while room is held"
            assert not held
            self.refusal_due = False
        else:
            assert not (self.refusal_due and self.credits.current is None and not held)
            if taken:
                self.taken.append(message)
                self.sizes[message] = size
                if not self.ahead:
                    assert not any(isinstance(a, AskRoom) for a in self.credits.outbox), \
                        "asked for room no message needed"
            else:
                assert self.credits.current is None
                assert self.credits.asking is not None, "no room and nobody asking"
                asked = [a for a in self.credits.outbox if isinstance(a, AskRoom)]
                assert all(a.size == size for a in asked), "asked for room it may not fit"
        self.perform()

    @precondition(lambda self: not self.gone)
    @rule()
    def reserve(self) -> None:
        asking = self.credits.asking
        self.credits.reserve()
        if self.credits.asking != asking:
            self.refusal_due = False
        self.perform()

    @rule()
    def flush(self) -> None:
        self.credits.flush()
        assert not self.credits.buffered
        self.perform()

    @rule()
    def close(self) -> None:
        self.closed, self.refusal_due = True, False
        self.credits.close()
        assert self.credits.current is None and self.credits.spare is None
        self.perform()

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 5.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        self.credits.due(self.now)
        for grant in (self.credits.current, self.credits.spare):
            assert grant is None or grant.due > self.now, "a grant overdue after due()"
        self.perform()

    # ---- the server's side ---------------------------------------------------------------

    @precondition(lambda self: self.asks)
    @rule(data=st.data(), fraction=st.sampled_from([0.0, 0.5, 1.0]),
          room=st.sampled_from([None, 0, 3, 8]), max_bytes=st.sampled_from([None, 4]))
    def answer(self, data: st.DataObject, fraction: float, room: int | None,
               max_bytes: int | None) -> None:
        ref = data.draw(st.sampled_from(sorted(self.asks)))
        ask = self.asks.pop(ref)
        late = ref in self.given_up
        self.given_up.discard(ref)
        count = int(ask.count * fraction)
        before = len(self.shipped_credits)
        if count:
            credit, self.next_credit = self.next_credit, self.next_credit + 1
            size = room if self.bytes_limited else None
            if size is not None and ask.size:
                size = max(size, ask.size)  # the server grants room the message fits in
            self.max_bytes = max_bytes if self.bytes_limited else None
            self.granted[credit] = (count, size)
            assert self.credits.answered(ref, self.now, credit, count, size=size,
                                         max_bytes=self.max_bytes)
            if ref in self.riding and not (late or self.closed):  # held no longer than linger
                assert self.credits.current is not None
                assert self.credits.current.due <= self.now + self.linger
        else:
            assert self.credits.answered(ref, self.now, None, 0, Overloaded("full"))
            if not (late or self.closed) and ref in self.needed:
                self.refusal_due = True
        closed = self.closed
        self.perform()
        if count and (late or closed):
            assert len(self.shipped_credits) == before + 1, "a late grant not given back"

    @precondition(lambda self: self.credits.asking is not None)
    @rule()
    def give_up(self) -> None:
        ref = self.credits.asking
        assert ref is not None
        self.credits.give_up(ref, Overloaded("no answer"))
        self.given_up.add(ref)
        if not self.closed and ref in self.needed:
            self.refusal_due = True
        assert self.credits.asking is None

    @precondition(lambda self: self.ships)
    @rule(data=st.data(), missing=st.integers(0, 2))
    def confirm(self, data: st.DataObject, missing: int) -> None:
        ref = data.draw(st.sampled_from(sorted(self.ships)))
        ship = self.ships.pop(ref)
        accepted = max(0, len(ship.messages) - missing)
        assert self.credits.shipped(ref, accepted, "refused")
        self.confirmed += accepted
        self.lost += len(ship.messages) - accepted

    @precondition(lambda self: not self.gone)
    @rule()
    def server_vanishes(self) -> None:
        self.dropped = list(self.credits.current.messages) if self.credits.current else []
        unconfirmed = sum(len(ship.messages) for ship in self.ships.values())
        assert self.credits.lose_all("gone") == len(self.dropped) + unconfirmed
        self.lost += len(self.dropped) + unconfirmed
        self.ships.clear()
        self.asks.clear()
        self.gone = True

    # ---- promises --------------------------------------------------------------------------

    @invariant()
    def nothing_lost_or_twice_and_in_order(self) -> None:
        if not hasattr(self, "credits"):
            return
        held = list(self.credits.current.messages) if self.credits.current else []
        assert self.shipped + self.dropped + held == self.taken

    @invariant()
    def every_grant_shipped_once_or_held(self) -> None:
        if not hasattr(self, "credits"):
            return
        held = [g.credit for g in (self.credits.current, self.credits.spare) if g is not None]
        assert len(set(held)) == len(held) and not set(held) & self.shipped_credits
        if not self.gone:
            assert set(held) | self.shipped_credits == set(self.granted)
        assert self.credits.spare is None or self.credits.current is not None
        for grant in (self.credits.current, self.credits.spare):
            if grant is not None:
                assert len(grant.messages) <= self.granted[grant.credit][0]

    @invariant()
    def every_message_accounted_for(self) -> None:
        if not hasattr(self, "credits"):
            return
        assert self.credits.lost == self.lost
        assert len(self.taken) == self.credits.pending + self.confirmed + self.lost


TestCredits = CreditsModel.TestCase


def test_a_message_larger_than_the_room_gives_it_back_and_asks_for_room_it_fits() -> None:
    """Overload stays exact in bytes: no grant takes more bytes than it reserved."""
    credits = Credits(4, 1.0, 1.0, itertools.count(1).__next__, ahead=True)
    assert not credits.take("a", 10, 0.0)
    (ask,) = credits.drain()
    assert isinstance(ask, AskRoom) and credits.answered(ask.ref, 0.0, 7, 4, size=5)
    assert not credits.take("big", 10, 0.0)
    back, again = credits.drain()
    assert isinstance(back, Ship) and back.credit == 7 and not back.messages
    assert isinstance(again, AskRoom) and again.size == 10
    credits.answered(again.ref, 0.0, None, 0, Overloaded("full in bytes"))
    with pytest.raises(Overloaded):
        credits.take("big", 10, 0.0)


def test_a_message_larger_than_max_batch_bytes_is_refused_at_take() -> None:
    credits = Credits(4, 1.0, 1.0, itertools.count(1).__next__, ahead=False)
    assert not credits.take("a", 3, 0.0)
    (ask,) = credits.drain()
    credits.answered(ask.ref, 0.0, 7, 4, size=100, max_bytes=8)
    assert credits.measures
    with pytest.raises(MessageTooLarge, match=r"9 bytes.*max_batch_bytes=8"):
        credits.take("big", 9, 0.0)
    assert credits.take("a", 8, 0.0) and credits.buffered == 1


def test_a_refusal_while_room_is_held_is_not_raised() -> None:
    credits = Credits(2, 1.0, 1.0, itertools.count(1).__next__, ahead=True)
    credits.reserve()
    (first,) = credits.drain()
    assert isinstance(first, AskRoom)
    credits.answered(first.ref, 0.0, 1, 2)
    assert credits.take("a", 0, 0.0)  # half used: asks ahead
    (ahead,) = credits.drain()
    assert isinstance(ahead, AskRoom)
    credits.answered(ahead.ref, 0.0, None, 0, Overloaded("full"))
    assert credits.take("b", 0, 0.0)  # the stale refusal is not raised: room was held
    assert not credits.take("c", 0, 0.0)  # no room now: asks again
    ship, again = credits.drain()
    assert isinstance(ship, Ship) and ship.messages == ["a", "b"] and isinstance(again, AskRoom)
    credits.answered(again.ref, 0.0, None, 0, Overloaded("full"))
    with pytest.raises(Overloaded):
        credits.take("c", 0, 0.0)  # this refusal counts, once
    assert not credits.take("c", 0, 0.0)


@pytest.mark.parametrize("ahead", [False, True])
@pytest.mark.parametrize("room", [None, 3])
def test_add_takes_only_where_take_decides_nothing_else(ahead: bool, room: int | None) -> None:
    """The handle's hot path (`add`) against `take` on a copy, message by message through a
    grant of 4: the first (starts the linger clock), the last (ships) and, with bytes, the
    one that would use up the bytes are left to `take`."""
    credits = Credits(4, 1.0, 5.0, itertools.count(1).__next__, ahead=ahead)
    assert not credits.add("x", 0) and not credits.take("x", 0, 0.0)
    (ask,) = credits.drain()
    credits.answered(ask.ref, 0.0, 7, 4, size=room)
    added = []
    for i in range(4):
        if credits.current is None:
            break  # shipped (full in bytes)
        oracle = copy.deepcopy(credits)
        assert oracle.take(i, 1, 2.0)
        if credits.add(i, 1):
            added.append(i)
            assert not oracle.outbox and vars(oracle.current) == vars(credits.current)
        else:
            assert credits.take(i, 1, 2.0)
        credits.drain()
    assert added == ([] if ahead else [1] if room == 3 else [1, 2])


def test_a_shipment_asks_for_the_next_grant_and_its_reply_grants_it() -> None:
    """One round trip per grant: the shipment of a used-up grant asks for the next room,
    and the messages after it are taken under the grant its reply carries."""
    credits = Credits(2, 1.0, 5.0, itertools.count(1).__next__, ahead=False, rides=True)
    assert not credits.take("a", 0, 0.0)
    (ask,) = credits.drain()
    credits.answered(ask.ref, 0.0, 7, 2)
    assert credits.take("a", 0, 0.0) and credits.take("b", 0, 0.0)
    (ship,) = credits.drain()
    assert isinstance(ship, Ship) and ship.messages == ["a", "b"] and ship.ask == 2
    assert credits.asking == ship.ref
    assert not credits.take("c", 0, 0.1) and not credits.drain()  # waits: no second ask
    assert credits.answered(ship.ref, 0.2, 8, 2) and credits.shipped(ship.ref, 2)
    assert credits.take("c", 0, 0.2) and not credits.drain()
    credits.due(1.2)  # linger passed: ships, and asks again
    (again,) = credits.drain()
    assert isinstance(again, Ship) and again.credit == 8 and again.ask == 2


def test_a_shipment_refused_room_raises_nothing_and_the_next_take_asks() -> None:
    """No room after the shipment: no grant and no refusal (the server counts none); the
    message that needs room then asks as ever, and that refusal counts."""
    credits = Credits(1, 1.0, 5.0, itertools.count(1).__next__, ahead=False, rides=True)
    assert not credits.take("a", 0, 0.0)
    (ask,) = credits.drain()
    credits.answered(ask.ref, 0.0, 7, 1)
    assert credits.take("a", 0, 0.0)
    (ship,) = credits.drain()
    assert isinstance(ship, Ship) and ship.ask == 1
    assert credits.answered(ship.ref, 0.0, None, 0, Overloaded("full"))
    assert not credits.take("b", 0, 0.0)  # not raised: asks
    (request,) = credits.drain()
    assert isinstance(request, AskRoom)
    credits.answered(request.ref, 0.0, None, 0, Overloaded("full"))
    with pytest.raises(Overloaded):
        credits.take("b", 0, 0.0)


def test_a_grant_from_a_shipment_goes_back_unused_after_linger_or_flush() -> None:
    credits = Credits(1, 1.0, 5.0, itertools.count(1).__next__, ahead=False, rides=True)
    for flush in (False, True):
        assert not credits.take("a", 0, 0.0)
        (ask,) = credits.drain()
        credits.answered(ask.ref, 0.0, 7, 1)
        assert credits.take("a", 0, 0.0)
        (ship,) = credits.drain()
        credits.answered(ship.ref, 0.0, 8, 1)
        if flush:
            credits.flush()
        else:
            credits.due(0.5)
            assert not credits.drain()
            credits.due(1.0)
        (back,) = credits.drain()
        assert isinstance(back, Ship) and back.credit == 8 and not back.messages and not back.ask
        assert credits.current is None and credits.asking is None


def test_flush_and_close_ship_without_asking() -> None:
    for end in (Credits.flush, Credits.close):
        credits = Credits(3, 1.0, 5.0, itertools.count(1).__next__, ahead=False, rides=True)
        assert not credits.take("a", 0, 0.0)
        (ask,) = credits.drain()
        credits.answered(ask.ref, 0.0, 7, 3)
        assert credits.take("a", 0, 0.0)
        end(credits)
        (ship,) = credits.drain()
        assert isinstance(ship, Ship) and ship.messages == ["a"] and not ship.ask
        assert credits.asking is None
