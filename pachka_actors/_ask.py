"""Requests matched to their replies: one Thespian round trip with this library's errors.

Thespian's `ask` returns whatever reaches the caller's endpoint next, so the
late reply to a request that timed out would be taken as the answer to the
next one. Handles therefore wrap each request in `Ask(ref, request)`; a shell
answers through `Caller.answer`, which wraps the reply in `Answer(ref, reply)`
for a wrapped request and sends it bare to an actor that sent a bare request.
The handle takes only the answer with its own ref and drops any other.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any, TypeVar

from thespian.actors import ActorAddress, ActorSystem, PoisonMessage

from ._thespian import runs_in_caller_thread
from .errors import ActorTimeout, PachkaError

log = logging.getLogger(__name__)

R = TypeVar("R")

_refs = itertools.count(1)


def new_ref() -> int:
    """A ref no other request of this process has: replies are matched by it."""
    return next(_refs)


@dataclass(frozen=True)
class Ask:
    ref: int
    request: Any


@dataclass(frozen=True)
class Answer:
    ref: int
    reply: Any


@dataclass(frozen=True)
class Caller:
    """Where a reply goes: an actor address, and the ref of a wrapped request (or None)."""

    address: ActorAddress
    ref: int | None = None

    @staticmethod
    def of(message: Any, sender: ActorAddress) -> tuple[Any, Caller]:
        """The request inside `message`, and who to answer."""
        if isinstance(message, Ask):
            return message.request, Caller(sender, message.ref)
        return message, Caller(sender)

    def answer(self, reply: Any) -> Any:
        """What to send back: `reply`, wrapped if the request was."""
        return reply if self.ref is None else Answer(self.ref, reply)


#: What `timeout=None` means to Thespian here (20 days: `select` takes no more). Thespian's
#: simpleSystemBase runs the wakeups due within an ask's timeout while it waits, but
#: with None it runs none and returns at once.
FOREVER = 20 * 24 * 3600.0


class Unreachable(ActorTimeout):
    """Thespian gave up on the request well before its timeout: the actor is gone.

    multiprocTCPBase answers a send to an exited actor with an empty reply within
    milliseconds. (simpleSystemBase returns early too, when nothing is left to
    run: no reply can ever come, but the actor may well exist.)
    """


def ask(system: ActorSystem, address: ActorAddress, request: Any, reply_type: type[R],
        timeout: float | None) -> R:
    """Send `request` and wait for its own reply (`timeout` None: forever).

    An exception as the reply is raised; no reply in time raises `ActorTimeout`
    (`Unreachable` when Thespian gave up early); a `PoisonMessage` (the actor's
    handler raised) raises `PachkaError`. Replies to earlier requests that
    arrive meanwhile are dropped.
    """
    ref = new_ref()
    wait = FOREVER if timeout is None else timeout
    deadline = time.monotonic() + wait
    message: Any = system.ask(address, Ask(ref, request), wait)
    while True:
        if isinstance(message, Answer) and message.ref == ref:
            return _reply(request, message.reply, reply_type)
        if isinstance(message, PoisonMessage) and isinstance(message.poisonMessage, Ask) \
                and message.poisonMessage.ref == ref:
            raise PachkaError(f"the actor failed on {type(request).__name__}: "
                              f"{message.details}")
        left = deadline - time.monotonic()
        if message is None:
            if left > min(1.0, wait / 2) and runs_in_caller_thread(system):
                raise ActorTimeout(f"no reply to {type(request).__name__}, and none can come: "
                                   f"nothing is left to run on simpleSystemBase (no timer "
                                   f"is pending)")
            if left > min(1.0, wait / 2):
                raise Unreachable(f"no reply to {type(request).__name__}: the actor at "
                                  f"{address} is unreachable (it has exited?)")
            raise ActorTimeout(f"no reply to {type(request).__name__} within {timeout} s")
        log.debug("dropped a reply that was not to %s (ref %d): %r",
                  type(request).__name__, ref, message)
        if left <= 0:
            raise ActorTimeout(f"no reply to {type(request).__name__} within {timeout} s")
        message = system.listen(left)


def _reply(request: Any, reply: Any, reply_type: type[R]) -> R:
    if isinstance(reply, reply_type):
        return reply
    if isinstance(reply, Exception):
        raise reply
    raise PachkaError(f"unexpected reply to {type(request).__name__}: {reply!r}")
