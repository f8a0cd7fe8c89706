"""Placement on convention members, and what the leader knows about them (docs/scale-out.md).

Thespian places an actor on an admin whose capabilities its class's
`actorSystemCapabilityCheck` accepts for the `targetActorRequirements` given to
`createActor`. Pachka's rule is plain equality: every requirement must be a
capability of the admin with an equal value (`capabilities_satisfy`). Nothing
else is inferred, so a placement reads like the admin's capabilities dict.

Thespian's private internals used here (4.0.x): the `Thespian_StatusReq`
message (the same one `python -m thespian.shell` sends) to learn the admin an
actor runs on, and the module constant that caches
`CONVENTION_REREGISTRATION_PERIOD` at import.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from thespian.actors import (
    Actor,
    ActorAddress,
    ActorExitRequest,
    ActorSystem,
    ActorSystemConventionUpdate,
    NoCompatibleSystemForActor,
)

from ._ask import Caller
from ._base import is_status_of, status_request
from .config import Requirements
from .errors import ConfigError


def create_placed(system: ActorSystem, actor_class: type, requirements: Requirements | None,
                  **create: Any) -> ActorAddress:
    """`system.createActor` on an admin meeting `requirements`; `ConfigError` naming them
    when no member of the convention has such capabilities (Thespian answers in ms)."""
    try:
        return system.createActor(actor_class, targetActorRequirements=requirements, **create)
    except NoCompatibleSystemForActor:
        raise ConfigError("requirements", f"no actor system in the convention has "
                                          f"capabilities matching {requirements!r}") from None


def host_admin(system: ActorSystem, address: ActorAddress, timeout: float) -> ActorAddress | None:
    """The address of the admin `address` runs on (None: no answer within `timeout`).

    Asked with Thespian's own status request, which every actor answers without
    its `receiveMessage`, so any actor class can be located.
    """
    reply = _first_reply(system, address, status_request(), timeout,
                         lambda reply: is_status_of(reply, address))
    return None if reply is None else reply.adminAddress


def _first_reply(system: ActorSystem, address: ActorAddress, request: Any, timeout: float,
                 accept: Callable[[Any], bool]) -> Any:
    """The first message `accept` takes after `request` is sent bare (None: none within
    `timeout`); others reaching the endpoint meanwhile, such as late replies, are dropped."""
    deadline = time.monotonic() + timeout
    reply: Any = system.ask(address, request, timeout)
    while not accept(reply):
        left = deadline - time.monotonic()
        if reply is None or left <= 0:
            return None
        reply = system.listen(left)
    return reply


def sync_reregistration_period() -> None:
    """Make admins forked from this process use `CONVENTION_REREGISTRATION_PERIOD` as set now.

    Thespian reads it once, when its convention module is imported; an admin
    forked later inherits that reading, so a value set afterwards would be
    ignored. A program that sets it before its first `ActorSystem` needs none of this.
    """
    import thespian.system.admin.convention as convention
    from thespian.system.utilis import str_to_timedelta

    value = os.environ.get("CONVENTION_REREGISTRATION_PERIOD")
    if value:
        convention.CONVENTION_REREGISTRATION_PERIOD = str_to_timedelta(value)


# ---- the leader's view of the convention ------------------------------------------------


@dataclass(frozen=True)
class GetMembers:
    """Ask a `ConventionWatcher` for `Members`."""


@dataclass(frozen=True)
class Members:
    """Admins of the convention as this admin knows them: present ones with their
    capabilities, and those that left (deregistered or missed their check-ins), each with
    the seconds since its removal was reported."""

    present: dict[str, dict[str, Any]] = field(default_factory=dict)
    left: dict[str, float] = field(default_factory=dict)


#: The watcher is one per actor system, found by this global name.
WATCHER_NAME = "pachka_actors.convention_watcher"


class ConventionWatcher(Actor):  # type: ignore[misc]
    """Keeps the convention notifications of its admin (`notifyOnSystemRegistrationChanges`).

    Only a leader hears about every member; a member hears about the leader only.
    Admin addresses are kept as strings: they are compared with the admin an
    actor reports, which may be another instance of the same address.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watching = False
        self._present: dict[str, dict[str, Any]] = {}
        self._left: dict[str, float] = {}

    def receiveMessage(self, message: Any, address: ActorAddress) -> None:
        message, sender = Caller.of(message, address)
        if not self._watching and not isinstance(message, ActorExitRequest):
            self._watching = True
            self.notifyOnSystemRegistrationChanges(True)
        if isinstance(message, ActorSystemConventionUpdate):
            admin = str(message.remoteAdminAddress)
            if message.remoteAdded:
                self._present[admin] = dict(message.remoteCapabilities or {})
                self._left.pop(admin, None)
            else:
                self._present.pop(admin, None)
                self._left[admin] = time.monotonic()
        elif isinstance(message, GetMembers):
            now = time.monotonic()
            self.send(sender.address, sender.answer(Members(
                dict(self._present), {a: now - t for a, t in self._left.items()})))
        elif isinstance(message, ActorExitRequest) and self._watching:
            self.notifyOnSystemRegistrationChanges(False)


def members(system: ActorSystem, timeout: float) -> Members | None:
    """The convention as the admin of `system` knows it (None: the watcher did not answer).

    The first call starts the watcher; Thespian then reports every member already
    registered, so that call may see an incomplete picture for a few milliseconds.
    """
    watcher = system.createActor(ConventionWatcher, globalName=WATCHER_NAME)
    reply: Members | None = _first_reply(system, watcher, GetMembers(), timeout,
                                         lambda reply: isinstance(reply, Members))
    return reply

