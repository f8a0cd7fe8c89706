"""`Courier`: everything one handle sends its server, in order, through one endpoint.

Thespian's external endpoint is not thread-safe, and a reply goes to the
endpoint that asked. So a handle talks only through an endpoint of its own,
from one thread (the courier thread), first in first out: credit requests,
shipments of the buffer and the handle's calls. Hence a handle can be shared
by threads; handles in different threads do not meet on the program's
endpoint; and a request always reaches the server after the shipments queued
before it, so a refused credit means the server is full, not that our own
shipment is still on its way. What is taken under which credit, and when it
ships, is decided by `Credits` (`_credits.py`); the courier performs it.

On simpleSystemBase actors run in the caller's thread and nothing may run in
another, so there the jobs run inline, under the system's lock: the buffer
ships when full, at the first `send_message` after `linger`, and before every
call that must see the server. Nothing waits longer than it would have: on
that base the server runs only during calls anyway.
"""

from __future__ import annotations

import functools
import logging
import pickle
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, cast

from thespian.actors import ActorAddress, ActorSystem

from ._ask import Answer, R, ask, new_ref
from ._base import Base, base_of, private_endpoint, system_key
from ._credits import AskRoom, Credits, Ship
from ._exit import Lifeline
from ._link import GetLink, LinkName
from .config import HandleOptions
from .errors import (
    ActorGone,
    ActorTimeout,
    MessagesLost,
    NotStarted,
    Overloaded,
    PachkaError,
    UnpicklableMessage,
    plural,
)
from .messages import Accepted, CheckLoadable, Granted, RequestCredit, SendMessages, Stop
from .sink import default_size

log = logging.getLogger(__name__)

#: The usual cause of a message that pickles here but not loads in the server's process.
UNLOADABLE = "a class defined in __main__ after the actor system started?"

#: Types that always pickle: `send_message` skips the check for them.
PLAIN = frozenset({int, float, str, bytes, bool, type(None)})

#: Seconds a courier thread with nothing to do and no grant held waits before it ends.
IDLE = 30.0

#: Seconds a grant may stay unused before it is given back: an idle producer then holds no
#: room at the server (a stopping server waits for open grants), long before `credit_timeout`.
IDLE_GRANT = 1.0

#: Seconds a courier keeps listening for the reply to a request that timed out.
LATE_WINDOW = 600.0

_SYSTEM_LOCKS: dict[Hashable, threading.RLock] = {}
_SYSTEM_LOCKS_GUARD = threading.Lock()
#: The inline couriers of each simpleSystemBase system: any call into it ships them all.
_INLINE: dict[Hashable, weakref.WeakSet[Courier]] = {}


def system_lock(key: Hashable) -> threading.RLock:
    """The lock that serialises this library's calls into one system's shared endpoint."""
    with _SYSTEM_LOCKS_GUARD:
        return _SYSTEM_LOCKS.setdefault(key, threading.RLock())


def check_picklable(message: Any) -> int | None:
    """Refuse at the call a message that could never cross to the server's process. Its
    pickle's length (`default_size`'s, measured once), None for a plain type."""
    if type(message) in PLAIN:
        return None
    try:
        return len(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))
    except Exception as exc:
        raise UnpicklableMessage(
            f"cannot send a {type(message).__qualname__}: it does not pickle ({exc}); "
            f"messages cross processes on this base") from exc


def _pickles(message: Any) -> bool:
    try:
        check_picklable(message)
    except UnpicklableMessage:
        return False
    return True


@dataclass(eq=False)
class _Call:
    """A handle's request, whose reply (or error) a caller waits for."""

    request: Any
    reply_type: type[Any]
    deadline: float | None
    ref: int = field(default_factory=new_ref)
    done: bool = False
    reply: Any = None
    error: BaseException | None = None


_Job = _Call | Ship | AskRoom


class Courier:
    """One handle's credits and its queue of jobs (see the module docstring)."""

    def __init__(self, system: ActorSystem, address: ActorAddress, options: HandleOptions,
                 base: Base, size: Callable[[Any], int] = default_size) -> None:
        self.system, self.address, self.ask_timeout = system, address, options.ask_timeout
        self.size = size  # measures as the server does: only when its grants say it has limits
        self.inline = base.inline
        #: simpleSystemBase: its base, to stop the server after a shutdown (`_base.reopened`).
        self.base = base_of(system) if self.inline else None
        self.checks_pickling = not base.inline  # messages cross processes: check they pickle
        self.key = system_key(system)
        #: The condition's lock, entered directly on the hot path (`put`): entering the
        #: RLock costs a fraction of the condition's Python-level `__enter__`.
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        # Asking on demand: this handle can wait for room (a refused request counts at the
        # server as a refused message), unlike an actor (producer.py); and with each
        # shipment, where a thread ships lingering grants (inline, an unused grant would
        # stay held until the next call).
        self.credits = Credits(options.buffer_size, options.linger or 0.0, IDLE_GRANT, new_ref,
                               ahead=False, rides=not self.inline and bool(options.linger))
        self.jobs: deque[_Job] = deque()
        self.current: _Job | None = None  # the job the thread runs
        self.late: set[int] = set()  # refs of requests that timed out: replies may come
        self.late_until = 0.0
        self.thread: threading.Thread | None = None
        self.ending = False
        self.crash: BaseException | None = None  # the thread's, not reported yet
        self.crashes = 0
        self.gone: str | None = None  # why no traffic is possible any more
        self.lifeline: Lifeline | None = None  # to the server's link (multi-process bases)
        self.linked = False  # whether there is a lifeline is known
        self.exiting = False  # the server said it exits: the lifeline ships
        self.reported = 0  # of `credits.lost`
        self.trouble = False  # for the next call to hear: losses, a crash, the server gone
        if self.inline:
            with _SYSTEM_LOCKS_GUARD:
                _INLINE.setdefault(self.key, weakref.WeakSet()).add(self)

    # ---- what the handle calls ------------------------------------------------------------

    def put(self, message: Any, wait: float, pickled: int | None = None) -> None:
        """Take one message under credit, waiting up to `wait` seconds at the server for
        room when there is none (`Overloaded` then, as the server answered). Measured
        (once) when the server has a byte limit, `pickled` (its pickle's length, known
        already) standing for the default size; `MessageTooLarge` beyond its batches'."""
        credits, until = self.credits, None
        if not (self.inline or credits.measures):  # the hot path: no clock, no queue, no
            with self.lock:                        # wake, no size (`Credits.add`)
                if self.gone is None and credits.add(message, 0):
                    return
        size = pickled if self.size is default_size else None
        while True:
            with self.lock:
                if self.gone is not None:
                    raise ActorGone(self.gone)
                now = time.monotonic()
                until = now + wait if until is None else until
                if size is None and credits.measures:
                    size = self.size(message)
                try:
                    taken = credits.take(message, size or 0, now, max(0.0, until - now))
                except Overloaded as refused:
                    if refused.terminating or now >= until:
                        raise
                    continue  # a shorter wait than ours ran out: ask again
                current = credits.current
                if taken and current is not None and len(current.messages) > 1 \
                        and not credits.outbox and not (self.inline and current.due <= now):
                    return  # the hot path: nothing to ship, ask or watch
                asking = credits.asking
                if self.inline:
                    credits.due(now)
                jobs = self._push()
                if taken and not (jobs and self.inline):
                    return
            # Inline: run the jobs now; threaded: wait for the room asked for.
            self._drive(functools.partial(self._asked, asking), None, "RequestCredit")
            if taken:
                return

    def call(self, request: Any, reply_type: type[R], timeout: float | None) -> R:
        """Ship the buffer, then send `request` and wait for its reply (`timeout` None: forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = _Call(request, reply_type, deadline)
        with self.cond:
            if self.gone is not None:
                raise ActorGone(self.gone)
            self.credits.flush()
            self._push()  # the buffer goes first
            self.jobs.append(job)
            self._wake()
        self._drive(lambda: job.done, None if deadline is None else deadline + 2.0,
                    type(request).__name__)
        if job.error is not None:
            raise job.error
        return cast(R, job.reply)

    def flush(self, timeout: float | None, release: bool = False) -> None:
        """Ship the buffer (`release`: and give back all room) and wait until every queued
        job is done; what could not be shipped is counted lost, not raised."""
        with self.cond:
            (self.credits.close if release else self.credits.flush)()
            self._push()
        self._drive(lambda: not self.jobs and self.current is None,
                    None if timeout is None else time.monotonic() + timeout, "flush")

    def end(self, timeout: float | None) -> None:
        """Flush, give back all room, then end the courier thread (a later call starts one)."""
        try:
            self.flush(timeout, release=True)
        finally:
            with self.cond:
                self.ending = True
                self.cond.notify_all()
                thread, lifeline = self.thread, self.lifeline
                if not self.exiting:
                    self.lifeline, self.linked = None, False
            if thread is not None and thread is not threading.current_thread():
                thread.join(5.0)
            if lifeline is not None and not self.exiting:
                lifeline.close()

    def down(self, why: str, final: bool = False) -> None:
        """No traffic is possible any more: what is held or unconfirmed is lost. Not yet
        while the server exits and the lifeline ships (`final`: its line has closed)."""
        with self.cond:
            if self.gone is None:
                self.gone, self.trouble = why, True
                self.cond.notify_all()
            if self.lifeline is not None and not final and self.exiting:
                return
            if lost := self.credits.lose_all(self.gone):
                log.error("%s accepted by the handle to %s lost: %s", plural(lost, "message"),
                          self.address, self.gone)

    # ---- the server's exit (`_exit.Lifeline`) ----------------------------------------------

    def take_shipments(self) -> list[Ship]:
        """The server exits: give back all room, and hand the lifeline every shipment not
        confirmed yet, the one under way first (answered, not taken twice, if it got there)."""
        with self.cond:
            self.exiting = True
            self.credits.close()
            self._push()
            ships = [job for job in self.jobs if isinstance(job, Ship)]
            self.jobs = deque(job for job in self.jobs if not isinstance(job, Ship))
            current = self.current
            if isinstance(current, Ship) and current.ref in self.credits.unconfirmed:
                return [current, *ships]
            return ships

    def confirmed(self, ref: int, reply: Any) -> None:
        """The server's answer, over the lifeline, to shipment `ref`."""
        with self.cond:
            accepted = reply.count if isinstance(reply, Accepted) else 0
            self.credits.shipped(ref, accepted, f"the exiting server at {self.address} "
                                                f"refused them: {reply!r}")
            self.cond.notify_all()

    def server_ended(self) -> None:
        """The lifeline closed: the server's process has ended."""
        self.down(f"the Pachka server at {self.address} has ended", final=True)

    def check(self, total: bool = False) -> None:
        """Raise what the next call must hear: `MessagesLost` for messages lost since the
        last report (`total`: since the start), or the thread's crash."""
        with self.cond:
            lost, since = self.credits.lost, 0 if total else self.reported
            if lost > since:
                self.reported = lost
                raise MessagesLost(lost - since, "; ".join(self.credits.why))
            if self.crash is not None:
                crash, self.crash = self.crash, None
                raise PachkaError(f"the courier thread of the handle to {self.address} failed "
                                  f"({crash!r}); its messages were kept, and a new thread "
                                  f"ships them") from crash
            self.trouble = self.gone is not None

    # ---- under the lock -------------------------------------------------------------------

    def _asked(self, ref: int | None) -> bool:
        return self.credits.asking != ref  # the request for room was answered or given up

    def _push(self) -> bool:
        """Queue what the credits decided; wake the thread. Whether there are jobs to run."""
        actions = self.credits.drain()
        self.jobs.extend(actions)
        if actions or self.credits.buffered == 1:  # jobs, or a linger clock to watch
            self._wake()
        return bool(self.jobs)

    def _wake(self) -> None:
        """The courier thread runs, and looks again at its jobs and deadlines."""
        self.cond.notify_all()
        if not self.inline and (self.thread is None or not self.thread.is_alive()):
            self.ending = False
            self.thread = threading.Thread(target=self._run, daemon=True,
                                           name=f"pachka-courier-{self.address}")
            self.thread.start()

    # ---- running the jobs ------------------------------------------------------------------

    def _drive(self, done: Callable[[], bool], deadline: float | None, what: str) -> None:
        """Run the jobs inline, or wait until `done` for the courier thread (starting it if
        needed); a crash of the thread meanwhile is raised (its jobs are kept)."""
        if self.inline:
            return self._run_inline()
        with self.cond:
            crashes = self.crashes
            while not done():
                if self.crashes != crashes:
                    crashes = self.crashes
                    self.check()
                self._wake()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ActorTimeout(f"{what}: the server did not answer in time; "
                                       f"{self.credits.pending} messages wait in the handle")
                self.cond.wait(0.5 if left is None else min(left, 0.5))

    def _run_inline(self) -> None:
        """Run our jobs in the caller's thread, after the buffers of the system's other
        handles: they were accepted before this call, and only a call ships them (a
        `stop()` through one handle must not wait for messages lingering in another)."""
        with system_lock(self.key):
            with _SYSTEM_LOCKS_GUARD:
                others = [c for c in _INLINE[self.key] if c is not self]
            for courier in [*others, self]:
                while True:
                    with courier.cond:
                        if courier is not self:
                            courier.credits.flush()
                        if not courier._push():
                            break
                        job = courier.jobs.popleft()
                    try:
                        courier._do(self.system, job)
                    except BaseException:
                        courier.jobs.appendleft(job)  # Ctrl-C: the next call runs it again
                        raise

    def _run(self) -> None:
        try:
            with private_endpoint(self.system) as endpoint:
                while (job := self._next(endpoint)) is not None:
                    self._do(endpoint, job)
        except BaseException as exc:
            with self.cond:
                if self.current is not None:  # its work may be partly done: at least once
                    self.jobs.appendleft(self.current)
                self.crash, self.trouble, self.crashes = exc, True, self.crashes + 1
            log.error("the courier thread of the handle to %s failed (%r); %s kept for the "
                      "next call", self.address, exc, plural(self.credits.pending, "message"))
        finally:
            with self.cond:
                self.current = None
                self.cond.notify_all()

    def _connect_lifeline(self, endpoint: ActorSystem) -> None:
        """Before the first room is asked for or list sent: where the server's link is, and
        a line to it if it is on this host (`linked` once that is known, whatever it is).
        The exit hook waits on it for a server this handle started: without one (a handle
        that only sent lists) the program ended before its server had finished."""
        if self.linked or self.inline:
            return
        try:
            where = self._ask(endpoint, GetLink(), LinkName, self.ask_timeout)
            self.linked = True
            if where.name is not None:
                self.lifeline = Lifeline(self, where.name)
        except OSError as exc:  # another host
            log.debug("no lifeline to %s: %r", self.address, exc)

    def _next(self, endpoint: ActorSystem) -> _Job | None:
        """The next job; meanwhile ship what `Credits.due` says (linger, idle grants), and
        listen for the replies to requests that timed out: Thespian's sender retries a
        reply no one takes for minutes, and an exiting server waits for its replies.

        None ends the thread: when asked to, or after `IDLE` seconds with no grant
        held (so a forgotten handle holds no thread; the next call starts one).
        """
        with self.cond:
            self.current = None
            self.cond.notify_all()
            idle_until = time.monotonic() + IDLE
            while not self._push():
                now = time.monotonic()
                deadline = self.credits.deadline()
                if deadline is None and (self.ending or (now >= idle_until and not self.late)):
                    return None
                wait = (idle_until if deadline is None else deadline) - now
                if not (self.late and now < self.late_until):
                    self.late.clear()
                    self.cond.wait(wait)
                else:
                    self.cond.release()
                    try:
                        reply = endpoint.listen(min(wait, 0.1))
                    finally:
                        self.cond.acquire()
                    if isinstance(reply, Answer) and reply.ref in self.late:
                        self.late.discard(reply.ref)  # a late grant: given back
                        late = reply.reply
                        if isinstance(late, Accepted) and late.granted is not None:
                            late = late.granted  # given with a shipment
                        if isinstance(late, Granted):
                            self._granted(reply.ref, late)
                self.credits.due(time.monotonic())
            self.current = self.jobs.popleft()
            return self.current

    def _ask(self, endpoint: ActorSystem, request: Any, reply_type: type[Any],
             timeout: float | None, ref: int | None = None) -> Any:
        """`ask`; a server found gone ends all traffic, a timeout leaves its reply to be
        listened for."""
        ref = new_ref() if ref is None else ref
        try:
            return ask(endpoint, self.address, request, reply_type, timeout, ref=ref,
                       inline=self.inline)
        except ActorGone as exc:
            self.down(str(exc))
            raise
        except ActorTimeout:
            with self.cond:
                self.late.add(ref)
                self.late_until = time.monotonic() + LATE_WINDOW
            raise

    def _do(self, endpoint: ActorSystem, job: _Job) -> None:
        if isinstance(job, Ship):
            self._ship(endpoint, job)
        elif isinstance(job, AskRoom):
            timeout = None if self.ask_timeout is None else self.ask_timeout + job.wait
            try:
                self._connect_lifeline(endpoint)
                room = self._ask(endpoint, RequestCredit(job.count, job.wait, job.size),
                                 Granted, timeout, job.ref)
            except PachkaError as exc:
                with self.cond:
                    self.credits.give_up(job.ref, exc)
            else:
                with self.cond:
                    self._granted(job.ref, room)
        else:
            left = None if job.deadline is None else job.deadline - time.monotonic()
            try:
                if isinstance(job.request, SendMessages):
                    self._connect_lifeline(endpoint)
                if left is not None and left <= 0 and not isinstance(job.request, Stop):
                    raise ActorTimeout(f"no reply to {type(job.request).__name__} within the "
                                       f"timeout: it waited behind earlier shipments")
                job.reply = self._ask(endpoint, job.request, job.reply_type,
                                      None if left is None else max(left, 0.01), job.ref)
            except PachkaError as exc:
                job.error = exc
                batch = job.request.messages if isinstance(job.request, SendMessages) else []
                if bad := self._unshippable(endpoint, batch, exc):
                    job.error = UnpicklableMessage(
                        f"{bad[1]}; it was not queued" if len(batch) == 1 else
                        f"{bad[1]}; none of the {len(batch)} was queued")
                    job.error.__cause__ = exc
        with self.cond:
            if isinstance(job, _Call):
                job.done = True
            self._push()

    def _ship(self, endpoint: ActorSystem, ship: Ship) -> None:
        """One list under its credit. Messages that cannot cross (one changed since it was
        checked, or of a class the server's process cannot load) cost only themselves: the
        others go, under the same credit. What the server did not take is counted lost."""
        messages, accepted, granted = ship.messages, 0, None
        why = f"the server at {self.address} had stopped"
        failure: PachkaError | None = None
        try:
            reply = self._ask(endpoint, SendMessages(messages, ship.credit, ship.ask, ship.size),
                              Accepted, self.ask_timeout, ship.ref)
            accepted, granted = reply.count, reply.granted
            if reply.refused is not None:  # too large: measured otherwise than the server
                why = str(reply.refused)
        except PachkaError as exc:
            failure = exc
            why = f"{exc} (the server may have some)" if isinstance(exc, ActorTimeout) \
                else str(exc)
            if bad := self._unshippable(endpoint, messages, exc):
                good = [m for i, m in enumerate(messages) if i not in bad[0]]
                why = bad[1]
                try:
                    accepted = self._ask(endpoint, SendMessages(good, ship.credit), Accepted,
                                         self.ask_timeout).count
                except PachkaError as again:
                    why = f"{why}; the other {len(good)} could not be shipped either: {again}"
        with self.cond:
            if ship.ask:
                self._rode(ship.ref, granted, failure)
            if self.exiting and not accepted:
                return  # it went again over the lifeline, which settles it
            lost = self.credits.lost
            self.credits.shipped(ship.ref, accepted, why)
            if self.credits.lost > lost:
                self.trouble = True
                log.error("%s not shipped to %s: %s",
                          plural(self.credits.lost - lost, "buffered message"), self.address, why)

    def _rode(self, ref: int, granted: Granted | None, failure: PachkaError | None) -> None:
        """The answer to the request for room that shipment `ref` made. Once the server
        exits its grant is not taken: the shipment went again over the lifeline, and the
        server withdrew the grant (`PachkaCore.rode`)."""
        if isinstance(failure, ActorTimeout):
            self.credits.give_up(ref, failure)  # a grant coming later goes back
        elif granted is None or self.exiting:
            self.credits.answered(ref, time.monotonic(), None)  # no room: `take` asks
        else:
            self._granted(ref, granted)

    def _granted(self, ref: int, room: Granted) -> bool:
        return self.credits.answered(ref, time.monotonic(), room.credit, room.count,
                                     room.refused, room.bytes, room.max_batch_bytes)

    def _unshippable(self, endpoint: ActorSystem, messages: list[Any],
                     failure: PachkaError) -> tuple[set[int], str] | None:
        """Which of `messages` made sending them fail, and why: those that do not pickle,
        else those the server's process cannot load (found by halving with
        `CheckLoadable`). None when they are not the cause, or the failure (no answer)
        says nothing about them."""
        if not (messages and self.checks_pickling) or isinstance(
                failure, ActorTimeout | NotStarted | Overloaded):
            return None
        bad = {i for i, message in enumerate(messages) if not _pickles(message)}
        why = "does not pickle"
        if not bad:
            why = f"cannot be loaded by the server's process ({UNLOADABLE})"
            try:
                bad = unloadable(messages, functools.partial(self._loads, endpoint))
            except ActorTimeout:
                return None
        if not bad:
            return None
        first, more = min(bad), f" ({len(bad)} of the {len(messages)} such)" * (len(bad) > 1)
        return bad, f"message {first}, a {type(messages[first]).__qualname__}, {why}{more}"

    def _loads(self, endpoint: ActorSystem, messages: list[Any]) -> bool:
        """Whether the server's process loads `messages` (no answer raises)."""
        try:
            self._ask(endpoint, CheckLoadable(messages), Accepted, self.ask_timeout)
        except ActorTimeout:
            raise
        except PachkaError:
            return False
        return True


def unloadable(messages: list[Any], loads: Callable[[list[Any]], bool]) -> set[int]:
    """The indices of `messages` that `loads` refuses, found by halving; none when even an
    empty list fails, for then the messages are not the cause."""
    if not loads([]):
        return set()
    bad: set[int] = set()
    spans = [range(len(messages))]
    while spans:
        span = spans.pop()
        if not span or loads([messages[i] for i in span]):
            continue
        if len(span) == 1:
            bad.add(span[0])
        else:
            spans += [span[len(span) // 2:], span[:len(span) // 2]]
    return bad
