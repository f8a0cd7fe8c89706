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

from ._base import Base, is_status_of, status_request
from .errors import ActorGone, ActorTimeout, PachkaError

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
    """Where a reply goes: an actor address, and the ref of a wrapped request (or None);
    or, for a request that came over a server's link (`_exit`), that link."""

    address: ActorAddress
    ref: int | None = None
    link: Any = None

    @staticmethod
    def of(message: Any, sender: ActorAddress, link: Any = None) -> tuple[Any, Caller]:
        """The request inside `message`, and who to answer."""
        if isinstance(message, Ask):
            return message.request, Caller(sender, message.ref, link)
        return message, Caller(sender, None, link)

    def answer(self, reply: Any) -> Any:
        """What to send back: `reply`, wrapped if the request was."""
        return reply if self.ref is None else Answer(self.ref, reply)


#: What `timeout=None` means to Thespian here (20 days: `select` takes no more). Thespian's
#: simpleSystemBase runs the wakeups due within an ask's timeout while it waits, but
#: with None it runs none and returns at once.
FOREVER = 20 * 24 * 3600.0

#: Seconds without any message after which `ask` checks that the actor still exists.
PROBE_AFTER = 2.0


def ask(system: ActorSystem, address: ActorAddress, request: Any, reply_type: type[R],
        timeout: float | None, *, ref: int | None = None, inline: bool | None = None) -> R:
    """Send `request` and wait for its own reply (`timeout` None: forever).

    An exception as the reply is raised; no reply in time raises `ActorTimeout`,
    `ActorGone` when Thespian gave up early or the actor was found gone; a `PoisonMessage`
    (the actor's handler raised), or a message Thespian could not send, raises
    `PachkaError`. Replies to earlier requests that arrive meanwhile are dropped.
    After each `PROBE_AFTER` seconds of silence the actor is asked for
    Thespian's status: a reply that can never come (the actor was killed, or
    dropped the request while exiting, as Thespian does silently) must end even
    a wait with no timeout. `ref` (default: a new one) lets a caller recognise a
    late reply; `inline` is `Base.of(system).inline`, if the caller knows it.
    """
    ref = new_ref() if ref is None else ref
    deadline = time.monotonic() + (FOREVER if timeout is None else timeout)
    inline = Base.of(system).inline if inline is None else inline  # no probes: nothing runs
    name = type(request).__name__
    outgoing: Any = Ask(ref, request)
    while True:
        began = time.monotonic()
        if began >= deadline:
            raise ActorTimeout(f"no reply to {name}{_within(timeout)}")
        wait = deadline - began if inline else min(deadline - began, PROBE_AFTER)
        sent, outgoing = outgoing, None
        try:
            message: Any = system.listen(wait) if sent is None else system.ask(address, sent,
                                                                                wait)
        except Exception as exc:  # pickling, transport: Thespian's own errors stay inside
            raise PachkaError(f"Thespian failed on {name} to {address}: {exc!r}") from exc
        if isinstance(message, Answer) and message.ref == ref:
            return _reply(request, message.reply, reply_type)
        if isinstance(message, PoisonMessage) and isinstance(message.poisonMessage, Ask) \
                and message.poisonMessage.ref == ref:
            raise PachkaError(f"the actor failed on {name}: {message.details}")
        if message is None:
            early = began + wait - time.monotonic() > min(1.0, wait / 2)
            if early and (sent is not None or inline):
                raise _gone(name, address, inline, probed=not isinstance(sent, Ask),
                            timeout=timeout)
            if not inline:
                outgoing = status_request()  # silence: is the actor still there?
        elif not is_status_of(message, address):
            log.debug("dropped a reply that was not to %s (ref %d): %r", name, ref, message)


def _within(timeout: float | None) -> str:
    """The wait a caller had left, as ' within 0.3 s' (no float noise: '0.299973')."""
    return "" if timeout is None else f" within {round(timeout, 2):g} s"


def _gone(name: str, address: ActorAddress, inline: bool, probed: bool,
          timeout: float | None) -> ActorTimeout:
    """Thespian returned early: no reply can come in time."""
    if inline:
        return ActorTimeout(f"no reply to {name}{_within(timeout)}, and none can come: on "
                            f"simpleSystemBase nothing runs before then (no message is "
                            f"pending, and no timer of the server is due sooner)")
    how = "killed, or it exited without answering" if probed else "it has exited?"
    return ActorGone(f"no reply to {name}: the actor at {address} is gone ({how})")


def _reply(request: Any, reply: Any, reply_type: type[R]) -> R:
    if isinstance(reply, reply_type):
        return reply
    if isinstance(reply, Exception):
        raise reply
    raise PachkaError(f"unexpected reply to {type(request).__name__}: {reply!r}")
