"""One Thespian round trip with this library's error handling, for every handle."""

from __future__ import annotations

from typing import Any, TypeVar

from thespian.actors import ActorAddress, ActorSystem, PoisonMessage

from .errors import ActorTimeout, PachkaError

R = TypeVar("R")


def ask(system: ActorSystem, address: ActorAddress, request: Any, reply_type: type[R],
        timeout: float | None) -> R:
    """Thespian's `ask` (`timeout` None: forever); an exception as the reply is raised.

    Thespian answers None on a timeout and `PoisonMessage` when the actor's handler
    raised: both become exceptions here, so no caller mistakes them for replies.
    """
    reply = system.ask(address, request, timeout)
    if isinstance(reply, reply_type):
        return reply
    if isinstance(reply, Exception):
        raise reply
    if reply is None:
        raise ActorTimeout(f"no reply to {type(request).__name__} within {timeout} s")
    if isinstance(reply, PoisonMessage):
        raise PachkaError(f"the actor failed on {type(request).__name__}: {reply.details}")
    raise PachkaError(f"unexpected reply to {type(request).__name__}: {reply!r}")
