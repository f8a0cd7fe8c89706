"""Hypothesis stateful test of the pure core: any interleaving of events keeps Pachka's promises.

Messages have sizes (drawn, 0 to 12 bytes) for the byte rules: no batch over
`max_batch_bytes`, cut as soon as the next message would not fit; a message larger
refused whole, never queued; `critical_queue_bytes` exact as `critical_queue_size`.
"""

from __future__ import annotations

import logging
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pachka_actors._journal import Live, records_of
from pachka_actors.core import (
    Answer,
    ArmRetryTimer,
    ArmTimer,
    CancelTimer,
    CreditRequested,
    DeadLetters,
    Drain,
    DrainDone,
    Draining,
    Effect,
    ExitRequested,
    ExportDone,
    Finish,
    JournalFull,
    KillExport,
    Log,
    Lose,
    MessagesReceived,
    PachkaCore,
    Reply,
    Restored,
    Spill,
    StartExport,
    State,
    StopRequested,
    Timer,
    TimerFired,
    TimerKind,
)
from pachka_actors.errors import MessageTooLarge, Overloaded, PermanentSinkError
from pachka_actors.messages import Accepted, Granted
from pachka_actors.sink import Batch


class CoreModel(RuleBasedStateMachine):
    """Drives a PachkaCore the way a shell would, checking every effect it returns."""

    core: PachkaCore

    @initialize(
        max_batch_size=st.integers(1, 6),
        critical_queue_size=st.integers(1, 15),
        max_batch_delay=st.sampled_from([None, 0.0, 1.0]),
        export_timeout=st.sampled_from([None, 2.0]),
        credit_timeout=st.sampled_from([None, 5.0]),
        shutdown_timeout=st.sampled_from([None, 30.0]),
        drains=st.booleans(),
        spills=st.booleans(),
        poison_every=st.sampled_from([None, 2, 5]),
        max_batch_bytes=st.sampled_from([None, 4, 10]),
        critical_queue_bytes=st.sampled_from([None, 8, 25]),
        restored=st.lists(st.lists(st.integers(0, 14), min_size=1, max_size=7), max_size=3),
    )
    def start(self, max_batch_size: int, critical_queue_size: int,
              max_batch_delay: float | None, export_timeout: float | None,
              credit_timeout: float | None, shutdown_timeout: float | None,
              drains: bool, spills: bool, poison_every: int | None,
              max_batch_bytes: int | None, critical_queue_bytes: int | None,
              restored: list[list[int]]) -> None:
        self.core = PachkaCore(max_batch_size=max_batch_size,
                               critical_queue_size=critical_queue_size,
                               max_batch_delay=max_batch_delay,
                               export_timeout=export_timeout, credit_timeout=credit_timeout,
                               shutdown_timeout=shutdown_timeout, drains=drains, spills=spills,
                               batch_prefix="b", max_batch_bytes=max_batch_bytes,
                               critical_queue_bytes=critical_queue_bytes,
                               notes=[] if spills else None)
        self.size_of: dict[int, int] = {-1: 1, -2: 13}  # every message's size, as measured
        self.grant_bytes: dict[int, int] = {}  # open grants' bytes, as the producers see them
        self.journal = Live()  # what a journal replaying the core's notes holds
        self.spilled: list[Batch] = []  # a journal keeps them: spilled is not delivered
        self.accepted = 0  # messages are the integers 0, 1, 2, ... in the order sent
        self.poison_every = poison_every  # message m fails on its own when m % this == 1
        self.delivered_upto = 0  # the good messages before it are delivered, in order
        self.done: set[int] = set()  # delivered, dead-lettered or spilled, each once
        self.maybe_delivered: set[int] = set()  # batches of killed exports
        self.in_flight: StartExport | None = None
        self.past_exports: list[int] = []
        self.batch_ids: dict[str, list[Any]] = {}  # every batch id issued, and its messages
        self.armed: list[Timer] = []  # every timer ever armed
        self.live: dict[int, Timer] = {}  # armed, neither fired nor cancelled
        self.lost = 0  # `Lose`: shutdown_timeout passed, with nowhere to keep them
        self.draining: list[Any] | None = None
        self.stopped = False
        self.exit_requested = False
        self.grants: dict[int, int] = {}  # open credit grants, as the producers see them
        self.expired: set[int] = set()
        self.beyond_capacity = False  # an expired grant's messages came anyway
        self.waiters: dict[int, tuple[int, int]] = {}  # waiting requests: id -> (count, size)
        self.next_waiter = 0
        self.too_large: set[int] = set()  # restored, larger than max_batch_bytes now
        self.restore(restored)

    def restore(self, sizes: list[list[int]]) -> None:
        """Batches a previous server spilled (under other limits, maybe) go first: the
        messages 0, 1, ...; one larger than max_batch_bytes now ends as a dead letter."""
        batches = []
        for n, batch_sizes in enumerate(sizes):
            messages = list(range(self.accepted, self.accepted + len(batch_sizes)))
            self.size_of.update(zip(messages, batch_sizes, strict=True))
            self.too_large.update(m for m in messages if self.core.max_batch_bytes is not None
                                  and self.size_of[m] > self.core.max_batch_bytes)
            batches.append(Batch(messages, f"old-{n}"))
            self.accepted += len(messages)
        for batch in batches:  # a journal holds what it gives the next server, whole
            self.journal.apply(("B", batch))
        if batches:
            self.apply(self.core.handle(Restored(batches, sizes if self.core.measures
                                                 else None)))

    # ---- the shell's side ------------------------------------------------------------

    def apply(self, effects: list[Effect]) -> list[Accepted | Granted]:
        replies: list[Accepted | Granted] = []
        for effect in effects:
            match effect:
                case Answer(Accepted() | Granted() as reply):
                    replies.append(reply)
                case Reply(int() as waiter, Granted() as grant):
                    count, size = self.waiters.pop(waiter)
                    assert grant.count <= count
                    if grant.credit is not None:
                        self.granted(grant, size)
                case StartExport(_, batch):
                    assert self.in_flight is None, "two exports in flight"
                    assert 0 < len(batch) <= self.core.max_batch_size
                    if not isinstance(batch, DeadLetters):  # for send_batch: under the ceiling
                        self.check_ceiling(batch)
                    if batch.id == f"b{self.core._batches}" and batch.id not in self.batch_ids \
                            and self.core.queue:  # just cut, the next message behind it:
                        assert len(batch) == self.core.max_batch_size or self.bytes(
                            [*batch, self.core.queue[0]]) > (self.core.max_batch_bytes or 0), \
                            "a batch cut before it was full"
                    # A batch keeps its id, and its messages, however often it is retried.
                    assert self.batch_ids.setdefault(batch.id, list(batch)) == list(batch)
                    self.in_flight = effect
                case KillExport(export_id):
                    assert self.in_flight is not None and self.in_flight.export_id == export_id
                    self.past_exports.append(export_id)
                    self.in_flight = None
                case ArmTimer(timer) | ArmRetryTimer(timer):
                    self.arm(timer)
                case CancelTimer(timer):
                    assert self.live.pop(timer.token, None) == timer, "cancelled a dead timer"
                case Drain(messages):
                    assert messages and self.core.drains and self.core.terminating
                    at = 0
                    for _, count in messages.parts:  # each part a batch within the ceiling
                        self.check_ceiling(messages[at:at + count])
                        at += count
                    self.draining = messages
                case Spill(batches):
                    assert batches and self.core.spills and self.exit_requested
                    assert all(0 < len(b) <= self.core.max_batch_size for b in batches)
                    for b in batches:
                        if not isinstance(b, DeadLetters):
                            self.check_ceiling(b)
                    self.spilled += batches
                    spilled = [m for b in batches for m in b]
                    self.deliver([m for m in spilled if not self.poison(m)])  # in order
                    self.account([m for m in spilled if self.poison(m)])
                case Finish():
                    self.stopped = True
                case Lose(count, _):
                    self.lost += count
                case Log():
                    pass
        assert self.core.state is State.STOPPED or not self.stopped
        return replies

    def bytes(self, messages: list[Any]) -> int:
        return sum(self.size_of[m] for m in messages)

    def check_ceiling(self, batch: list[Any]) -> None:
        limit = self.core.max_batch_bytes
        assert limit is None or self.bytes(batch) <= limit, \
            f"a batch of {self.bytes(batch)} bytes over max_batch_bytes={limit}"

    def sized(self, messages: list[int]) -> list[int] | None:
        """The sizes the shell passes: measured when the core has a byte limit."""
        return [self.size_of[m] for m in messages] if self.core.measures else None

    def free_bytes(self) -> int:
        assert self.core.critical_queue_bytes is not None
        return (self.core.critical_queue_bytes - self.core.queue_bytes
                - self.core.reserved_bytes)

    def granted(self, grant: Granted, size: int) -> None:
        """A grant, checked for its bytes: room the message asking fits in, up to a batch."""
        assert grant.credit is not None and grant.max_batch_bytes == self.core.max_batch_bytes
        self.grants[grant.credit] = grant.count
        if self.core.critical_queue_bytes is None:
            assert grant.bytes is None
            return
        # (a producer measuring a message larger than a batch refuses it: MessageTooLarge)
        limit = self.core.max_batch_bytes
        assert grant.bytes is not None
        assert max(size, 1) <= grant.bytes <= (limit or grant.bytes) \
            or (limit is not None and grant.bytes == limit < size)
        self.grant_bytes[grant.credit] = grant.bytes

    def arm(self, timer: Timer) -> None:
        assert timer.token not in self.live
        self.armed.append(timer)
        self.live[timer.token] = timer

    def fire(self, timer: Timer) -> list[Effect]:
        """Fire a live timer, as the shell's `Timers` would."""
        assert self.live.pop(timer.token) == timer
        return self.core.handle(TimerFired(timer))

    def all_accounted(self) -> None:
        """Once stopped, each accepted message was delivered or counted lost; counted lost
        though delivered only where a killed export may have got it there (the core
        cannot know)."""
        extra = len(self.done) + self.lost - self.accepted
        assert 0 <= extra <= len(self.maybe_delivered & self.done), (extra, self.lost)

    def poison(self, message: int) -> bool:
        """Fails on its own: a poison message, or one no batch can hold now."""
        return message in self.too_large or (self.poison_every is not None
                                             and message % self.poison_every == 1)

    def takes(self, batch: Batch) -> bool:
        """Whether the sink would take `batch` (a dead letter is never taken twice here)."""
        return not isinstance(batch, DeadLetters) and not any(map(self.poison, batch))

    def account(self, messages: list[Any]) -> None:
        for m in messages:
            assert m not in self.done, f"message {m} accounted for twice"
            self.done.add(m)

    def deliver(self, messages: list[Any]) -> None:
        """Exactly once and in order, except what a killed export may have sent already;
        messages that fail on their own never (they are dead letters, in any order)."""
        for m in messages:
            assert not self.poison(m), f"message {m} fails alone, yet was delivered"
            while self.poison(self.delivered_upto):
                self.delivered_upto += 1
            if m < self.delivered_upto:
                assert m in self.maybe_delivered, f"message {m} delivered twice"
            else:
                assert m == self.delivered_upto, f"message {m} out of order"
                self.delivered_upto += 1
                self.account([m])

    def finish_export(self, failure: Any) -> None:
        assert self.in_flight is not None
        export, self.in_flight = self.in_flight, None
        self.past_exports.append(export.export_id)
        if failure is None and isinstance(export.batch, DeadLetters):
            assert all(self.poison(m) for m in export.batch), export.batch
            self.account(export.batch)
        elif failure is None:
            self.deliver(export.batch)
        self.apply(self.core.handle(ExportDone(export.export_id, failure)))

    # ---- rules ----------------------------------------------------------------------

    @rule(sizes=st.lists(st.integers(0, 12), max_size=8))
    def send(self, sizes: list[int]) -> None:
        count = len(sizes)
        room = self.core.critical_queue_size - len(self.core.queue)
        terminating = self.core.terminating
        messages = list(range(self.accepted, self.accepted + count))
        self.size_of.update(zip(messages, sizes, strict=True))
        limit = self.core.max_batch_bytes
        too_large = [i for i, size in enumerate(sizes) if limit is not None and size > limit]
        free = None if self.core.critical_queue_bytes is None else self.free_bytes()
        [reply] = self.apply(self.core.handle(MessagesReceived(messages, None,
                                                               self.sized(messages))))
        assert isinstance(reply, Accepted)
        if too_large:  # refused whole, naming the first, never queued
            assert reply.count == 0 and isinstance(reply.refused, MessageTooLarge)
            assert (reply.refused.size, reply.refused.limit) == (sizes[too_large[0]], limit)
            assert reply.refused.index == (too_large[0] if count > 1 else None)
            return
        journal_full = self.core.journal_full is not None
        expected = 0 if terminating or journal_full else max(0, min(count,
                                                                     room - self.core.reserved))
        by_count = expected
        if free is not None:  # the prefix that fits in bytes too
            while expected and sum(sizes[:expected]) > free:
                expected -= 1
        assert reply.count == expected
        assert (reply.refused is not None) == (expected < count or terminating)
        if reply.refused is not None:
            assert isinstance(reply.refused, Overloaded)
            assert reply.refused.terminating == terminating
            if journal_full and not terminating:
                assert reply.refused.limit == "journal_max_bytes"
            elif not terminating:  # which limit refused the first message not taken
                assert reply.refused.limit == ("critical_queue_bytes" if expected < by_count
                                               else "critical_queue_size")
        self.accepted += reply.count

    @rule(count=st.integers(1, 8), size=st.integers(0, 12))
    def request_credit(self, count: int, size: int) -> None:
        room = self.core.critical_queue_size - len(self.core.queue) - self.core.reserved
        fits = self.core.critical_queue_bytes is None or self.free_bytes() >= max(size, 1)
        [grant] = self.apply(self.core.handle(CreditRequested(count, size=size)))
        assert isinstance(grant, Granted)
        expected = 0 if (self.core.terminating or not fits
                         or self.core.journal_full is not None) else max(0, min(count, room))
        assert grant.count == expected
        assert (grant.credit is None) == (expected == 0)
        if grant.credit is not None:
            self.granted(grant, size)

    @rule(count=st.integers(1, 8), size=st.integers(0, 12))
    def request_credit_waiting(self, count: int, size: int) -> None:
        """A blocking producer: with no room, its request waits for some, in turn."""
        waiter, self.next_waiter = self.next_waiter, self.next_waiter + 1
        self.waiters[waiter] = (count, size)
        replies = self.apply(self.core.handle(CreditRequested(count, 1.0, waiter, size)))
        if replies:  # room at once, or a stopping server: answered like any request
            [grant] = replies
            assert isinstance(grant, Granted)
            assert (grant.credit is None) == self.core.terminating
            del self.waiters[waiter]
            if grant.credit is not None:
                self.granted(grant, size)
        else:
            assert waiter in self.waiters and any(w[0] == waiter for w in self.core.waiting)

    @rule(full=st.booleans())
    def journal_fills_or_frees(self, full: bool) -> None:
        """The shell's journal reached journal_max_bytes, or compacted below it."""
        self.apply(self.core.handle(JournalFull("journal is at journal_max_bytes=1" if full
                                                else None)))

    @precondition(lambda self: any(t.kind is TimerKind.WAIT for t in self.live.values()))
    @rule(data=st.data())
    def wait_expires(self, data: st.DataObject) -> None:
        timer = data.draw(st.sampled_from(sorted(
            (t for t in self.live.values() if t.kind is TimerKind.WAIT), key=lambda t: t.token)))
        self.apply(self.fire(timer))

    @precondition(lambda self: self.grants or self.expired)
    @rule(data=st.data(), mismeasured=st.booleans(), ask=st.sampled_from([0, 3, 8]),
          ask_size=st.integers(0, 12))
    def ship_credited(self, data: st.DataObject, mismeasured: bool, ask: int,
                      ask_size: int) -> None:
        """A producer ships what it buffered under a grant: all of it is taken, always; but
        for a message larger than max_batch_bytes (`mismeasured`: the producer measured it
        otherwise), which is not. With `ask`, the reply carries the next grant exactly when
        a request made next would get one (none while others wait), and refuses nothing."""
        credit = data.draw(st.sampled_from(sorted([*self.grants, *self.expired])))
        limit = self.grants.pop(credit, None)
        room = self.grant_bytes.pop(credit, 12 * 3)
        if limit is None:
            self.expired.discard(credit)
            limit = 3
            self.beyond_capacity = True
        count = data.draw(st.integers(0, limit))
        messages = list(range(self.accepted, self.accepted + count))
        for m in messages:  # each within the grant's bytes and a batch's
            size = data.draw(st.integers(0, min(room, self.core.max_batch_bytes or 12)))
            self.size_of[m], room = size, room - size
        mismeasured = mismeasured and self.core.max_batch_bytes is not None
        shipped = [*messages, -2] if mismeasured else messages
        stopped = self.core.state is State.STOPPED
        waiting = bool(self.core.waiting)
        [reply] = self.apply(self.core.handle(MessagesReceived(shipped, credit,
                                                               self.sized(shipped), ask,
                                                               ask_size)))
        assert reply.count == (0 if stopped else count)
        assert isinstance(reply.refused, MessageTooLarge) == (mismeasured and not stopped)
        self.accepted += reply.count
        assert isinstance(reply, Accepted)
        grant = reply.granted
        journal_full = self.core.journal_full is not None
        if grant is not None:
            assert ask and not (stopped or waiting or self.core.terminating or journal_full)
            assert 0 < grant.count <= ask
            self.granted(grant, ask_size)
        elif ask and not (stopped or waiting or self.core.terminating or journal_full):
            room = self.core.critical_queue_size - len(self.core.queue) - self.core.reserved
            assert room <= 0 or (self.core.critical_queue_bytes is not None  # no room for one
                                 and self.free_bytes() < max(ask_size, 1))

    @precondition(lambda self: self.grants)
    @rule(data=st.data())
    def expire_credit(self, data: st.DataObject) -> None:
        credit = data.draw(st.sampled_from(sorted(self.grants)))
        self.expired.add(credit)
        del self.grants[credit]
        self.grant_bytes.pop(credit, None)
        reserved, waiting = self.core.reserved, len(self.waiters)
        timer = Timer(TimerKind.CREDIT, credit)
        self.apply(self.fire(timer) if credit in self.live
                   else self.core.handle(TimerFired(timer)))
        assert self.core.reserved < reserved or len(self.waiters) < waiting  # freed, or given on

    @precondition(lambda self: self.core.timer is not None and self.core.timer.kind
                  is not TimerKind.EXPORT)
    @rule()
    def fire_timer(self) -> None:
        assert self.core.timer is not None
        self.apply(self.fire(self.core.timer))

    @precondition(lambda self: self.core.timer is not None and self.core.timer.kind
                  is TimerKind.EXPORT)
    @rule(sink_got_it=st.booleans())
    def export_timeout(self, sink_got_it: bool) -> None:
        """The exporter is killed; it may or may not have delivered its batch first."""
        export = self.in_flight
        assert export is not None and self.core.timer is not None
        if sink_got_it and self.takes(export.batch):
            self.deliver(export.batch)
            self.maybe_delivered.update(export.batch)
        effects = self.fire(self.core.timer)
        assert KillExport(export.export_id) in effects
        self.apply(effects)
        assert self.core.state in (State.RETRY_BACKOFF, State.DRAINING, State.STOPPED)

    @precondition(lambda self: self.in_flight is not None)
    @rule(ok=st.booleans(), named=st.booleans())
    def export_finished(self, ok: bool, named: bool = False) -> None:
        """The sink answers: down (a failure time can cure), or as its messages are: a
        batch holding a message that fails on its own fails as a whole, naming which
        (`indices`) or not."""
        assert self.in_flight is not None
        batch = self.in_flight.batch
        bad = [i for i, m in enumerate(batch) if self.poison(m)]
        if not ok:
            self.finish_export(RuntimeError("sink down"))
        elif bad and not isinstance(batch, DeadLetters):
            self.finish_export(PermanentSinkError("bad row", indices=bad if named else None))
        else:
            self.finish_export(None)

    @precondition(lambda self: self.draining is not None)
    @rule(ok=st.booleans())
    def drain_finished(self, ok: bool) -> None:
        assert self.draining is not None
        messages, self.draining = self.draining, None
        if ok and any(self.poison(m) for m in messages):
            self.apply(self.core.handle(DrainDone(PermanentSinkError("bad row"))))
            return
        if ok:
            self.deliver(messages)
        self.apply(self.core.handle(DrainDone(None if ok else OSError("fallback down"))))

    @precondition(lambda self: self.draining is None)
    @rule()
    def stop(self) -> None:
        self.apply(self.core.handle(StopRequested()))

    @precondition(lambda self: self.draining is None)
    @rule(out_of_time=st.booleans(), killed_export_delivered=st.booleans())
    def exit_request(self, out_of_time: bool, killed_export_delivered: bool) -> None:
        """A bare exit: a stop bounded by shutdown_timeout, which may pass meanwhile. The
        export in flight is not killed for it: it may finish (Pachka's In-flight rule)."""
        in_flight = self.in_flight
        self.exit_requested = True
        self.apply(self.core.handle(ExitRequested()))
        assert in_flight is None or self.in_flight is in_flight, "an exit cancelled an export"
        bound = [t for t in self.live.values() if t.kind is TimerKind.SHUTDOWN]
        assert len(bound) <= 1
        if out_of_time and bound and self.core.state is not State.STOPPED:
            if self.in_flight is not None and killed_export_delivered \
                    and self.takes(self.in_flight.batch):
                self.deliver(self.in_flight.batch)  # it got there just before the kill
                self.maybe_delivered.update(self.in_flight.batch)
            assert len(self.done) + self.core.held >= self.accepted
            held = self.core.held
            self.apply(self.fire(bound[0]))
            assert self.in_flight is None and not self.core.credits
            self.grants.clear()  # given up: their producers report what they held
            self.grant_bytes.clear()
            if self.draining is not None:
                self.drain_finished(ok=True)
            if not self.core.spills and self.core.done:
                assert self.accepted - len(self.done) <= self.lost <= held  # each counted
        self.run_to_stop()
        assert self.core.state is State.STOPPED and not self.live

    @precondition(lambda self: self.armed or self.past_exports)
    @rule(data=st.data())
    def stale_event(self, data: st.DataObject) -> None:
        """Old timers (cancelled, so only fired by hand) and old exporters change nothing,
        whatever state they find, and are logged as Pachka does: at WARNING."""
        choices: list[Any] = [t for t in self.armed if t.token not in self.live
                              and t.kind is not TimerKind.CREDIT]
        choices += [ExportDone(i) for i in self.past_exports]
        choices += [Timer(kind, 10**6) for kind in TimerKind if kind is not TimerKind.CREDIT]
        choice = data.draw(st.sampled_from(choices))
        event = TimerFired(choice) if isinstance(choice, Timer) else choice
        before = self.core.status()
        [effect] = self.core.handle(event)
        assert isinstance(effect, Log) and effect.level == logging.WARNING
        assert self.core.status() == before

    @rule()
    def run_to_stop(self) -> None:
        """Stop, then let every export succeed: everything accepted arrives, once, in order."""
        if self.draining is None:
            self.stop()
        for _ in range(10_000):
            if self.core.state is State.STOPPED:
                break
            if self.grants:  # producers ship what they hold, or give their credits back
                credit, _ = self.grants.popitem()
                self.grant_bytes.pop(credit, None)
                self.apply(self.core.handle(MessagesReceived([], credit, self.sized([]))))
            elif self.draining is not None:
                self.drain_finished(ok=True)
            elif self.in_flight is not None:
                self.export_finished(ok=True)
            else:
                self.fire_timer()
        assert self.core.state is State.STOPPED
        self.all_accounted()
        assert not [t for t in self.live.values() if t.kind is not TimerKind.CREDIT]
        [reply] = self.apply(self.core.handle(MessagesReceived([-1], None, self.sized([-1]))))
        assert reply.count == 0
        [grant] = self.apply(self.core.handle(CreditRequested(1)))
        assert grant.count == 0

    # ---- invariants -----------------------------------------------------------------

    @invariant()
    def the_journal_holds_what_the_core_holds(self) -> None:
        """Replayed, the notes rebuild every batch the core holds (or spilled), under its id,
        and its queue: what a journal gives the next server."""
        for record in records_of(self.core.take_notes()):
            self.journal.apply(record)
        if self.core.notes is None:
            return
        phase = self.core.phase
        held = [*([self.core.batch] if self.core.batch else []), *self.core.pending,
                *(phase.batches if isinstance(phase, Draining) else []), *self.spilled]
        assert {b.id: list(b) for b in held} == {
            i: list(b) for i, b in self.journal.batches.items()}
        assert list(self.journal.queued) == list(self.core.queue)

    @invariant()
    def bounded(self) -> None:
        assert self.core.reserved == sum(self.core.credits.values()) >= 0
        assert self.core.credits == self.grants
        if not self.beyond_capacity:
            assert len(self.core.queue) + self.core.reserved <= self.core.critical_queue_size
        if self.core.state in (State.EXPORTING, State.RETRY_BACKOFF):
            assert 0 < len(self.core.batch) <= self.core.max_batch_size
            if not isinstance(self.core.batch, DeadLetters):
                self.check_ceiling(self.core.batch)

    @invariant()
    def bounded_in_bytes(self) -> None:
        """The queue's bytes are its messages' sizes, and critical_queue_bytes holds with
        the bytes granted, exactly (but for an expired grant's messages that came)."""
        core = self.core
        assert core.credit_bytes == self.grant_bytes
        assert core.reserved_bytes == sum(core.credit_bytes.values()) >= 0
        if core.measures:
            assert list(core.sizes) == [self.size_of[m] for m in core.queue]
            assert core.queue_bytes == self.bytes(list(core.queue))
        else:
            assert not core.sizes and core.queue_bytes == 0
        if core.critical_queue_bytes is not None and not self.beyond_capacity:
            assert core.queue_bytes + core.reserved_bytes <= core.critical_queue_bytes
        assert -2 not in core.queue, "a message too large for any batch was queued"

    @invariant()
    def waiting_only_while_full(self) -> None:
        """A waiting producer is never left waiting while there is room, or after a stop."""
        core = self.core
        if core.waiting:
            assert not core.terminating
            head = self.waiters[core.waiting[0][0]][1]
            assert len(core.queue) + core.reserved >= core.critical_queue_size or (
                core.critical_queue_bytes is not None and self.free_bytes() < max(head, 1)) \
                or core.journal_full is not None
        assert {w[0] for w in core.waiting} == set(self.waiters)

    @invariant()
    def timers_superseded_are_cancelled(self) -> None:
        """Every live timer is the current one, a grant's, or the shutdown bound."""
        for timer in self.live.values():
            if timer.kind is TimerKind.CREDIT:
                assert timer.token in self.core.credits
            elif timer.kind is TimerKind.WAIT:
                assert any(w[2] == timer for w in self.core.waiting)
            elif timer.kind is not TimerKind.SHUTDOWN:
                assert timer == self.core.timer, f"{timer} outlived its use"
        assert self.core.timer is None or self.core.timer.token in self.live

    @invariant()
    def consistent(self) -> None:
        core = self.core
        assert (core.state is State.EXPORTING) == (self.in_flight is not None)
        assert (core.state is State.DRAINING) == (self.draining is not None)
        assert (core.export_id is not None) == (core.state is State.EXPORTING)
        if core.terminating and core.state is State.IDLE:
            assert not core.queue and core.credits  # only promised messages are awaited
        if core.state is State.IDLE and not core.terminating:
            assert len(core.queue) < core.max_batch_size
            # full in bytes (the next message would not fit, or none could) goes out at once
            assert core.max_batch_bytes is None or core.queue_bytes < core.max_batch_bytes
            timed = core.queue and core.max_batch_delay is not None
            assert (core.timer is not None) == bool(timed)
        if core.state is State.RETRY_BACKOFF:
            assert core.timer is not None and core.timer.kind is TimerKind.RETRY
            assert core.retry_num >= 1
        if core.terminating and core.drains:
            # drain_on_terminate takes over at once; only an in-flight export may finish
            # first, or producers with credits ship what they were promised; dead letters
            # are never drained: their export may wait for its retry.
            waiting = core.state is State.IDLE and not core.queue and core.credits
            dead_letters = (core.state is State.RETRY_BACKOFF and not core.queue
                            and all(isinstance(b, DeadLetters) for b in (core.batch,
                                                                         *core.pending)))
            assert core.state in (State.EXPORTING, State.DRAINING, State.STOPPED) \
                or waiting or dead_letters
        if core.state is State.STOPPED:
            assert not core.queue and not core.batch and core.timer is None and not core.credits
            self.all_accounted()
        # Everything accepted is delivered or still held: nothing falls out of the machine.
        assert len(self.done) + core.held + self.lost >= self.accepted


CoreModel.TestCase.settings = settings(stateful_step_count=30, deadline=None)
TestCoreModel = CoreModel.TestCase



def test_out_of_time_at_exit_reports_the_count_lost() -> None:
    core = PachkaCore(max_batch_size=5, critical_queue_size=100, max_batch_delay=None,
                      export_timeout=None, shutdown_timeout=30.0, drains=False)
    [export] = [e for e in core.handle(MessagesReceived(list(range(12))))
                if isinstance(e, StartExport)]
    effects = core.handle(ExitRequested())
    [bound] = [e.timer for e in effects if isinstance(e, ArmTimer)
               and e.timer.kind is TimerKind.SHUTDOWN]
    effects = core.handle(TimerFired(bound))
    assert KillExport(export.export_id) in effects
    assert Lose(12, "not delivered within shutdown_timeout") in effects
    assert effects[-1] == Finish() and core.state is State.STOPPED


def test_the_export_in_flight_at_exit_finishes_and_keeps_its_id() -> None:
    """Pachka's In-flight rule at a bare exit: the export is not killed and redone (a sink
    that had committed it would get it twice); the rest follows in new batches."""
    core = PachkaCore(max_batch_size=5, critical_queue_size=100, max_batch_delay=None,
                      export_timeout=10.0, shutdown_timeout=30.0, drains=False,
                      batch_prefix="x-")
    [_, export, _] = core.handle(MessagesReceived(list(range(7))))
    assert isinstance(export, StartExport) and export.batch.id == "x-1"
    effects = core.handle(ExitRequested())
    assert not [e for e in effects if isinstance(e, KillExport | StartExport)]
    effects = core.handle(ExportDone(export.export_id))
    [following] = [e for e in effects if isinstance(e, StartExport)]
    assert following.batch == [5, 6] and following.batch.id == "x-2"


def test_open_grants_at_exit_are_awaited_then_given_up_without_crying_wolf() -> None:
    """Producers may still ship what they were promised; at the bound the grants are given
    up at INFO (only a producer knows whether it held anything: it reports that)."""
    core = PachkaCore(max_batch_size=5, critical_queue_size=100, max_batch_delay=None,
                      export_timeout=None, shutdown_timeout=30.0, drains=False)
    [answer] = core.handle(CreditRequested(7))
    assert isinstance(answer, Answer) and isinstance(answer.value, Granted)
    effects = core.handle(ExitRequested())
    assert core.state is State.IDLE and core.credits == {answer.value.credit: 7}
    [bound] = [e.timer for e in effects if isinstance(e, ArmTimer)]
    effects = core.handle(TimerFired(bound))
    assert [e.level for e in effects if isinstance(e, Log)] == [logging.INFO]
    assert effects[-1] == Finish() and not core.credits


def test_shutdown_timeout_passing_during_a_drain_waits_for_its_end() -> None:
    """Found by the model: the bound firing while `drain_on_terminate` ran dropped the
    drained messages (the server stopped with them neither delivered nor reported)."""
    core = PachkaCore(max_batch_size=3, critical_queue_size=2, max_batch_delay=None,
                      export_timeout=None, shutdown_timeout=30.0, drains=True, spills=True)
    core.handle(MessagesReceived([0, 1]))
    [drain, bound] = core.handle(ExitRequested())
    assert isinstance(drain, Drain) and isinstance(bound, ArmTimer)
    assert core.handle(TimerFired(bound.timer)) == []   # the drain's end decides
    assert core.state is State.DRAINING and core.held == 2
    [spill, finish] = core.handle(DrainDone(OSError("fallback down")))
    assert isinstance(spill, Spill) and [list(b) for b in spill.batches] == [[0, 1]]
    assert isinstance(finish, Finish)


def test_stop_during_retry_backoff_drains_the_batch_waiting_for_its_retry() -> None:
    """Found by the model: with nothing queued, a stop left the batch in retry backoff to
    its retry, though drain_on_terminate takes over at once (docs/shutdown.md)."""
    core = PachkaCore(max_batch_size=1, critical_queue_size=1, max_batch_delay=None,
                      export_timeout=2.0, drains=True)
    core.handle(MessagesReceived([0]))
    assert core.timer is not None
    core.handle(TimerFired(core.timer))  # the export ran past export_timeout
    assert core.state is State.RETRY_BACKOFF
    effects = core.handle(StopRequested())
    assert [list(e.messages) for e in effects if isinstance(e, Drain)] == [[0]]
    assert core.status().state is State.DRAINING


def test_dead_letters_failing_while_stopping_do_not_hold_back_the_drain() -> None:
    """Found by the model: a dead-letter export killed after a stop went to its retry
    backoff while messages waited behind it, instead of the drain taking them at once."""
    core = PachkaCore(max_batch_size=1, critical_queue_size=3, max_batch_delay=None,
                      export_timeout=2.0, drains=True)
    [_, first, _] = core.handle(MessagesReceived(["ok", "bad", "later"]))
    assert isinstance(first, StartExport)
    [second, _] = core.handle(ExportDone(first.export_id))[-2:]
    assert isinstance(second, StartExport)
    effects = core.handle(ExportDone(second.export_id, PermanentSinkError("bad")))
    [letters] = [e for e in effects if isinstance(e, StartExport)]
    assert isinstance(letters.batch, DeadLetters)
    core.handle(StopRequested())  # the dead letters' export may finish first
    assert core.timer is not None
    effects = core.handle(TimerFired(core.timer))  # ...but runs past export_timeout
    assert [list(e.messages) for e in effects if isinstance(e, Drain)] == [["later"]]
    assert [list(b) for b in core.pending] == [["bad"]]  # exported after the drain


def test_promised_messages_arriving_while_dead_letters_wait_for_their_retry_are_drained() -> None:
    """Found by the model: stopping with `drain_on_terminate`, dead letters in retry
    backoff (never drained) held back messages a producer shipped under its grant until
    that retry; they are drained at once, as they would have been without the letters."""
    core = PachkaCore(max_batch_size=1, critical_queue_size=1, max_batch_delay=None,
                      export_timeout=None, drains=True, max_batch_bytes=4)
    [letters] = [e for e in core.handle(Restored([Batch([0], "old")], [[5]]))  # too large
                 if isinstance(e, StartExport)]
    [answer] = core.handle(CreditRequested(1))
    assert isinstance(answer, Answer) and isinstance(answer.value, Granted)
    core.handle(StopRequested())
    core.handle(ExportDone(letters.export_id, RuntimeError("dead_letter failed")))
    assert core.retry_num == 1  # in retry backoff
    effects = core.handle(MessagesReceived([1], answer.value.credit, [0]))
    [drain] = [e for e in effects if isinstance(e, Drain)]
    assert list(drain.messages) == [1] and core.state is State.DRAINING


def test_a_shipment_asking_for_room_gets_the_next_grant_in_its_reply() -> None:
    """One round trip per grant (issue 20): room is granted as to a request that came right
    after the shipment, exactly; with none left the reply carries no grant and refuses
    nothing (a shell counts no refused message)."""
    core = PachkaCore(max_batch_size=50, critical_queue_size=10, max_batch_delay=None,
                      export_timeout=None, drains=False)
    [first] = core.handle(CreditRequested(4))
    assert isinstance(first, Answer) and first.value.credit is not None
    [reply] = core.handle(MessagesReceived([0, 1, 2, 3], first.value.credit, ask=8))
    assert isinstance(reply, Answer) and reply.value == Accepted(4, granted=reply.value.granted)
    grant = reply.value.granted
    assert grant is not None and grant.count == 6 and core.reserved == 6  # 10 - 4 queued
    [full] = core.handle(MessagesReceived(list(range(4, 10)), grant.credit, ask=8))
    assert full == Answer(Accepted(6)) and not core.credits and len(core.queue) == 10


def test_a_grant_given_with_a_shipment_sent_again_at_exit_is_withdrawn() -> None:
    """A handle told that the server exits sends its unconfirmed shipment again over the
    lifeline: it never took the grant the first one's reply carried, so the exiting server
    does not wait for it."""
    core = PachkaCore(max_batch_size=5, critical_queue_size=100, max_batch_delay=None,
                      export_timeout=None, shutdown_timeout=30.0, drains=False)
    [first] = core.handle(CreditRequested(3))
    assert isinstance(first, Answer) and first.value.credit is not None
    [reply] = core.handle(MessagesReceived([0, 1], first.value.credit, ask=3))
    assert isinstance(reply, Answer) and reply.value.granted is not None and core.reserved == 3
    core.handle(ExitRequested())
    assert core.credits  # awaited: room promised to a producer
    effects = core.handle(MessagesReceived([0, 1], first.value.credit))
    assert effects[0] == Answer(Accepted(2)) and not core.credits and core.reserved == 0
    assert core.held == 2  # taken once


def test_a_killed_export_that_delivered_is_counted_lost_and_said_so() -> None:
    """CI's counterexample to the model once `Lose` carried the count: a batch (restored)
    failed, was retried, and its export was killed at `shutdown_timeout` just after the
    sink took it. The core cannot know: it reports the message lost, and the model allows
    that only for such a batch."""
    model = CoreModel()
    model.start(max_batch_size=1, critical_queue_size=1, max_batch_delay=None,
                export_timeout=None, credit_timeout=None, shutdown_timeout=30.0,
                drains=False, spills=False, poison_every=None, max_batch_bytes=None,
                critical_queue_bytes=None, restored=[[0]])
    model.export_finished(named=False, ok=False)
    model.fire_timer()
    model.exit_request(killed_export_delivered=True, out_of_time=True)
    assert (model.lost, model.done, model.maybe_delivered) == (1, {0}, {0})
    model.teardown()
