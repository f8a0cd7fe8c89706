"""`Courier`: everything one handle sends its server, in order, through one endpoint.

Thespian's external endpoint is not thread-safe, and a reply goes to the
endpoint that asked. So a handle talks only through an endpoint of its own,
from one thread (the courier thread), first in first out: credit requests,
shipments of the buffer and the handle's calls. Hence a handle can be shared
by threads; handles in different threads do not meet on the program's
endpoint; and a request always reaches the server after the shipments queued
before it, so a refused credit means the server is full, not that our own
shipment is still on its way.

On simpleSystemBase actors run in the caller's thread and nothing may run in
another, so there the jobs run inline, under the system's lock: the buffer
ships when full, at the first `send_message` after `linger`, and before every
call that must see the server. Nothing waits longer than it would have: on
that base the server runs only during calls anyway.

A little over this project's ~400-line guide: the buffer, the credit it lives
under and the thread that ships it share one lock and one set of invariants,
and read best in one place.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from thespian.actors import ActorAddress, ActorSystem

from ._ask import Answer, Unreachable, ask
from ._thespian import private_endpoint
from .errors import ActorTimeout, PachkaError, UnpicklableMessage
from .messages import Accepted, CheckLoadable, Granted, RequestCredit, SendMessages, Stop

log = logging.getLogger(__name__)

#: The usual cause of a message that pickles here but not loads in the server's process.
UNLOADABLE = "a class defined in __main__ after the actor system started?"

#: Types that always pickle: `send_message` skips the check for them.
_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})

#: Seconds a courier thread with nothing to do and no open grant waits before it ends.
IDLE = 30.0

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


def _join_inline(key: Hashable, courier: Courier) -> weakref.WeakSet[Courier]:
    """Register an inline courier with its system's others; their set."""
    with _SYSTEM_LOCKS_GUARD:
        neighbours = _INLINE.setdefault(key, weakref.WeakSet())
        neighbours.add(courier)
        return neighbours


def check_picklable(message: Any) -> None:
    """Refuse at the call a message that could never cross to the server's process."""
    if type(message) in _PLAIN:
        return
    try:
        pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
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
class _Request:
    request: Any
    reply_type: type[Any]
    deadline: float | None
    done: bool = False
    reply: Any = None
    error: BaseException | None = None


@dataclass(eq=False)
class _Shipment:
    credit: int
    messages: list[Any]


class Courier:
    """One handle's buffer, its credit and its queue of jobs (see the module docstring)."""

    def __init__(self, system: ActorSystem, address: ActorAddress, key: Hashable, *,
                 ask_timeout: float | None, linger: float | None, buffer_size: int,
                 threaded: bool, checks_pickling: bool) -> None:
        self.system = system
        self.address = address
        self.ask_timeout = ask_timeout
        self.linger = linger
        self.buffer_size = buffer_size
        self.threaded = threaded
        self.checks_pickling = checks_pickling
        self.inline_lock = None if threaded else system_lock(key)
        #: The system's inline couriers, this one among them (None: threaded).
        self.neighbours = None if threaded else _join_inline(key, self)
        #: The condition's lock, entered directly on the hot path (`put`): entering the
        #: RLock costs a fraction of the condition's Python-level `__enter__`.
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.buffer: list[Any] = []
        self.credit: int | None = None
        self.room = 0
        self.oldest = 0.0
        self.renewing = False
        self.jobs: deque[_Request | _Shipment] = deque()
        self.busy = False
        self.current: _Request | _Shipment | None = None
        #: Replies still expected to requests that timed out, and until when.
        self.late = 0
        self.late_until = 0.0
        self.thread: threading.Thread | None = None
        self.ending = False
        self.crash: BaseException | None = None
        #: Errors of shipments, raised once by the next call (which then does nothing).
        self.problems: list[PachkaError] = []
        #: Set when no traffic is possible any more (the system was shut down).
        self.down: PachkaError | None = None

    # ---- what the handle calls ------------------------------------------------------------

    def put(self, message: Any, wait: float = 0.0) -> None:
        """Buffer one message under credit; ask for credit when there is no room left,
        waiting up to `wait` seconds at the server for room when it is full."""
        if self.checks_pickling and type(message) not in _PLAIN:
            check_picklable(message)
        cond, lock = self.cond, self.lock
        while True:
            with lock:
                if self.problems or self.down:
                    self._raise_problems()
                if self.crash is not None:
                    self._ensure_thread()
                if self.room:
                    if not self.buffer:
                        self.oldest = time.monotonic()
                        if self.threaded:
                            cond.notify_all()  # the courier thread starts the linger clock
                    self.buffer.append(message)
                    self.room -= 1
                    if self.threaded or time.monotonic() - self.oldest < (self.linger or 0.0):
                        return
                    self._hand_over()  # inline, and the linger ran out: ship now
                    renew = False
                elif self.renewing:  # another thread is asking for credit: wait for it
                    cond.wait(0.05)
                    continue
                else:
                    self.renewing = renew = True
            if not renew:
                self._run_inline()
                return
            try:
                self._renew(wait)
            finally:
                with cond:
                    self.renewing = False
                    cond.notify_all()

    def call(self, request: Any, reply_type: type[Any], timeout: float | None) -> Any:
        """Ship the buffer, then send `request` and wait for its reply (`timeout` None: forever)."""
        with self.cond:
            self._raise_problems()
            self._hand_over()
        return self._request(request, reply_type, timeout)

    def flush(self, timeout: float | None) -> None:
        """Ship the buffer and wait until every queued job is done."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            self._raise_problems()
            self._hand_over()
        if self.threaded:
            self._wait(lambda: not self.jobs and not self.busy, deadline, "flush")
        else:
            self._run_inline()
        with self.cond:
            self._raise_problems()

    def end(self, timeout: float | None) -> None:
        """Flush, then end the courier thread; the handle may start another by its next call."""
        try:
            self.flush(timeout)
        finally:
            with self.cond:
                self.ending = True
                self.cond.notify_all()
                thread = self.thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(5.0)

    def shut_down(self, reason: str, timeout: float | None) -> None:
        """Before the actor system goes down: ship what we can, then refuse every call."""
        try:
            self.end(timeout)
        except Exception as exc:
            log.error("could not ship the buffer to %s before the actor system shut down: %s",
                      self.address, exc)
        with self.cond:
            self.down = PachkaError(reason)
            self.ending = True
            self.cond.notify_all()
            lost = self.pending()
        if lost:
            log.error("%d messages accepted by the handle to %s are lost: %s", lost,
                      self.address, reason)

    def pending(self) -> int:
        """Messages accepted by this handle and not yet confirmed by the server."""
        with self.cond:
            jobs = [*self.jobs, self.current]
            return len(self.buffer) + sum(len(job.messages) for job in jobs
                                          if isinstance(job, _Shipment))

    # ---- under the lock -------------------------------------------------------------------

    def _raise_problems(self) -> None:
        if self.down is not None:
            raise PachkaError(str(self.down))
        if self.problems:
            problems, self.problems = self.problems, []
            text = ("; ".join(str(problem) for problem in problems)
                    + " (reported by this later call, which did nothing: call it again)")
            raise (type(problems[0]) if len(problems) == 1 else PachkaError)(text)

    def _hand_over(self) -> None:
        """The open grant and its messages become a shipment, queued in order."""
        if self.credit is not None:
            self.jobs.append(_Shipment(self.credit, self.buffer))
            self.credit, self.buffer, self.room = None, [], 0
            self.cond.notify_all()

    # ---- asking ----------------------------------------------------------------------------

    def _renew(self, wait: float = 0.0) -> None:
        """Hand the full buffer over and reserve room for the next one.

        The shipment goes first, so a refusal means the server is full with our
        messages counted, as Pachka's `send_message` would find it.
        """
        with self.cond:
            self._hand_over()
        timeout = None if self.ask_timeout is None else self.ask_timeout + wait
        granted = self._request(RequestCredit(self.buffer_size, wait), Granted, timeout)
        if granted.credit is None:
            assert granted.refused is not None
            raise granted.refused
        with self.cond:
            self.credit, self.room = granted.credit, granted.count

    def _request(self, request: Any, reply_type: type[Any], timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        job = _Request(request, reply_type, deadline)
        with self.cond:
            if self.down is not None:
                raise PachkaError(str(self.down))
            self.jobs.append(job)
            self.cond.notify_all()
        if self.threaded:
            self._wait(lambda: job.done, None if deadline is None else deadline + 2.0,
                       type(request).__name__)
        else:
            self._run_inline()
        if job.error is not None:
            raise job.error
        return job.reply

    def _wait(self, condition: Callable[[], bool], deadline: float | None, what: str) -> None:
        """Wait for the courier thread, starting it if needed; never for a dead one."""
        with self.cond:
            while not condition():
                self._ensure_thread()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ActorTimeout(f"{what}: the server did not answer in time; "
                                       f"{self.pending()} messages wait in the handle")
                self.cond.wait(0.5 if left is None else min(left, 0.5))

    def _ensure_thread(self) -> None:
        """Under the lock: a courier thread runs. A crashed one is reported once (its
        jobs and buffer are kept), and the next call starts a new one."""
        if self.thread is not None and self.thread.is_alive():
            return
        if self.down is not None:
            raise PachkaError(str(self.down))
        if self.crash is not None:
            crash, self.crash, self.thread = self.crash, None, None
            raise PachkaError(
                f"the courier thread of the handle to {self.address} failed: {crash!r}; "
                f"{self.pending()} messages are kept and shipped by the next call") from crash
        self.ending = False
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"pachka-courier-{self.address}")
        self.thread.start()

    def _run_inline(self) -> None:
        """Run our jobs in the caller's thread, after the buffers of the system's other
        handles: they were accepted before this call, and only a call ships them (a
        `stop()` through one handle must not wait for messages lingering in another)."""
        assert self.inline_lock is not None and self.neighbours is not None
        with self.inline_lock:
            with _SYSTEM_LOCKS_GUARD:
                others = [c for c in self.neighbours if c is not self]
            for other in others:
                with other.cond:
                    other._hand_over()
                other._run_jobs()
            self._run_jobs()

    def _run_jobs(self) -> None:
        while True:
            with self.cond:
                if not self.jobs:
                    return
                job = self.jobs.popleft()
            self._do(self.system, job)

    # ---- the courier thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            with private_endpoint(self.system) as endpoint:
                while (job := self._next(endpoint)) is not None:
                    if self._do(endpoint, job):
                        with self.cond:
                            self.late += 1
                            self.late_until = time.monotonic() + LATE_WINDOW
        except BaseException as exc:
            with self.cond:
                if self.current is not None:  # its work may be partly done: at least once
                    self.jobs.appendleft(self.current)
                self.crash = exc
            log.error("the courier thread of the handle to %s failed (%r); %d messages "
                      "are kept for the next call", self.address, exc, self.pending())
        finally:
            with self.cond:
                self.busy = False
                self.current = None
                self.cond.notify_all()

    def _next(self, endpoint: ActorSystem) -> _Request | _Shipment | None:
        """The next job; meanwhile ship the buffer once its oldest message reaches `linger`.

        None ends the thread: when asked to, or after `IDLE` seconds with no open
        grant (so a forgotten handle holds no thread; the next call starts one).
        """
        linger = self.linger or 0.0
        with self.cond:
            self.busy = False
            self.current = None
            self.cond.notify_all()
            idle_until = time.monotonic() + IDLE
            while not self.jobs:
                now = time.monotonic()
                wait: float | None
                if self.buffer:
                    wait = self.oldest + linger - now
                    if wait <= 0:
                        self._hand_over()
                        continue
                elif self.ending or (self.credit is None and now >= idle_until
                                     and not self.late):
                    return None
                else:
                    wait = idle_until - now if self.credit is None else None
                if self.late and now < self.late_until:
                    self._take_late_reply(endpoint, 0.1 if wait is None else min(wait, 0.1))
                else:
                    self.late = 0
                    self.cond.wait(wait)
            self.busy = True
            self.current = self.jobs.popleft()
            return self.current

    def _take_late_reply(self, endpoint: ActorSystem, timeout: float) -> None:
        """Under the lock: listen a while for the reply to a request that timed out.

        Thespian's sender retries a reply no one takes (for minutes), and an
        exiting server waits for its replies: so the endpoint keeps listening.
        """
        self.cond.release()
        try:
            reply = endpoint.listen(timeout)
        finally:
            self.cond.acquire()
        if isinstance(reply, Answer):
            log.debug("dropped a late reply: %r", reply)
            self.late -= 1

    def _do(self, endpoint: ActorSystem, job: _Request | _Shipment) -> bool:
        """Run one job; True when its reply may still come (the request timed out)."""
        if isinstance(job, _Shipment):
            return self._ship(endpoint, job)
        try:
            left = None if job.deadline is None else job.deadline - time.monotonic()
            if left is not None and left <= 0 and not isinstance(job.request, Stop):
                raise ActorTimeout(f"no reply to {type(job.request).__name__} within the "
                                   f"timeout: it waited behind earlier shipments")
            job.reply = ask(endpoint, self.address, job.request, job.reply_type,
                            None if left is None else max(left, 0.01))
        except BaseException as exc:
            job.error = exc
        with self.cond:
            job.done = True
            self.cond.notify_all()
        return _timed_out(job.error)

    def _ship(self, endpoint: ActorSystem, shipment: _Shipment) -> bool:
        """One list under its credit. A message that does not pickle (mutated since it was
        checked) costs only itself: the others go, and the credit is closed."""
        messages = shipment.messages
        try:
            ask(endpoint, self.address, SendMessages(messages, shipment.credit), Accepted,
                self.ask_timeout)
            return False
        except Exception as exc:
            failure: Exception = exc
        bad = {i for i, m in enumerate(messages) if not _pickles(m)} \
            if self.checks_pickling else set()
        why = "no longer pickle"
        if not bad and self.checks_pickling and not isinstance(failure, ActorTimeout):
            with contextlib.suppress(ActorTimeout):  # no answer: the messages may be fine
                bad = unloadable(messages, probe(lambda request: ask(
                    endpoint, self.address, request, Accepted, self.ask_timeout)))
            why = f"cannot be loaded by the server's process ({UNLOADABLE})"
        problem: PachkaError
        if bad:
            good = [m for i, m in enumerate(messages) if i not in bad]
            first = messages[min(bad)]
            problem = UnpicklableMessage(
                f"{len(bad)} buffered messages {why} and were dropped (first: a "
                f"{type(first).__qualname__}); the other {len(good)} were shipped")
            try:
                ask(endpoint, self.address, SendMessages(good, shipment.credit), Accepted,
                    self.ask_timeout)
            except Exception as exc:
                problem = PachkaError(f"{len(messages)} buffered messages could not be "
                                      f"shipped to {self.address}: {exc}")
        else:
            problem = PachkaError(f"{len(messages)} buffered messages could not be shipped "
                                  f"to {self.address} (the server may have some): {failure}")
        log.error("%s", problem)
        with self.cond:
            self.problems.append(problem)
        return _timed_out(failure)


def probe(ask_server: Callable[[CheckLoadable], Any]) -> Callable[[list[Any]], bool]:
    """Whether the server's process loads a list, asked with `ask_server`; a server that
    does not answer raises `ActorTimeout` (it says nothing about the messages)."""
    def loads(messages: list[Any]) -> bool:
        try:
            ask_server(CheckLoadable(messages))
        except ActorTimeout:
            raise
        except Exception:
            return False
        return True
    return loads


def unloadable(messages: list[Any], loads: Callable[[list[Any]], bool]) -> set[int]:
    """The indices of `messages` the server's process cannot load, found by halving with
    `loads` (a `CheckLoadable` round trip); none when even an empty list fails, for then
    the messages are not the cause."""
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


def _timed_out(error: BaseException | None) -> bool:
    return isinstance(error, ActorTimeout) and not isinstance(error, Unreachable)
