"""What this library knows of Thespian beyond its public API, in one place (Thespian 4.0.x).

Thespian has no public way to tell which base a system runs, to find a child's
OS process, or to steer which children it stops when an actor exits. `Base`
answers the first once per handle or actor; the functions below read the rest.
tests/test_internals.py fails loudly when an installed Thespian no longer has
what they read; each degrades to "unknown" rather than guessing wrong.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any

from thespian.actors import Actor, ActorAddress, ActorSystem, ExternalContext

SIMPLE = "simpleSystemBase"
TCP = "multiprocTCPBase"
UDP = "multiprocUDPBase"
QUEUE = "multiprocQueueBase"

_TRANSPORTS = {"TCPTransport": TCP, "UDPTransport": UDP, "MultiprocessQueueTransport": QUEUE}


@dataclass(frozen=True)
class Base:
    """The Thespian system base that a system or an actor runs on."""

    name: str

    @classmethod
    def of(cls, where: ActorSystem | Actor) -> Base:
        if isinstance(where, Actor):
            transport = getattr(getattr(where, "_myRef", None), "transport", None)
            return cls(SIMPLE if transport is None
                       else _TRANSPORTS.get(type(transport).__name__, "unknown"))
        base: Any = getattr(where, "_systemBase", None)
        return cls(type(base).__module__.rsplit(".", 1)[-1] if base is not None else "unknown")

    @property
    def inline(self) -> bool:
        """Actors run in the caller's thread (simpleSystemBase): no process of their own,
        nothing runs between calls, nothing is pickled, no exit request at shutdown."""
        return self.name == SIMPLE

    @property
    def watches_files(self) -> bool:
        """An actor may have Thespian wake it when a file it names becomes readable
        (`ThespianWatch`): only multiprocTCPBase implements it."""
        return self.name == TCP

    @property
    def notices_exits_at_once(self) -> bool:
        """Thespian reports a child's exit within milliseconds (TCP, UDP); multiprocQueueBase
        polls every ~2 s, long enough to stall a shutdown that waits for it."""
        return self.name in (TCP, UDP)


def child_pid(actor: Actor, address: ActorAddress) -> int | None:
    """The pid of the child `actor` has just created at `address`, or None.

    On the multi-process bases `createActor` inside an actor forks the child at
    once, as an OS child of the actor's process, and records it in Thespian's
    `_child_procs`. Under simpleSystemBase, or for a child created through the
    Admin (globalName, capability placement), there is no such record.
    """
    for info in getattr(getattr(actor, "_myRef", None), "_child_procs", ()):
        if info.childAddr == address:
            return int(info.childProc.pid)
    return None


def exit_children(actor: Actor) -> list[ActorAddress] | None:
    """Thespian's list of the children it stops and awaits when `actor` exits (mutable).

    None under simpleSystemBase, which has no such list to steer.
    """
    children = getattr(getattr(actor, "_myRef", None), "_children", None)
    return children if isinstance(children, list) else None


def forget_children(actor: Actor, ended: list[ActorAddress]) -> None:
    """Stop Thespian awaiting, at `actor`'s exit, the children at `ended`, which the
    caller knows have ended (a pidfd told it): Thespian may have reaped them without a
    word, or would notice only after ~2 s polls (multiprocQueueBase), and the actor's
    exit would wait for them meanwhile."""
    children = exit_children(actor)
    if children is None:
        return
    gone = list(ended)  # addresses do not hash
    for info in getattr(getattr(actor, "_myRef", None), "_child_procs", ()):
        if info.childAddr in ended:
            gone.append(getattr(info, "childRealAddr", info.childAddr))
    children[:] = [address for address in children if address not in gone]


def forget_dead_children(actor: Actor) -> None:
    """Stop Thespian awaiting, at `actor`'s exit, children whose process has ended.

    Handling one child's exit, Thespian reaps every dead child but reports one;
    the others stay on its exit list, and the actor's exit would wait for their
    answer until `ActorSystem.shutdown()` gives up, leaving processes behind.
    """
    children = exit_children(actor)
    if children is None:
        return
    live = []
    for info in getattr(getattr(actor, "_myRef", None), "_child_procs", ()):
        if info.childProc.is_alive():
            live += [info.childAddr, getattr(info, "childRealAddr", info.childAddr)]
    children[:] = [address for address in children if address in live]


@contextlib.contextmanager
def reopened(system: ActorSystem, base: Any) -> Iterator[None]:
    """simpleSystemBase only: `system` as it was before `shutdown()`, for the time of the
    block. That base's shutdown ends no actor (it sends them no `ActorExitRequest`): it
    only drops the system's base, which `base` (taken while it ran) still is, so a handle
    can still stop its server, drained, at interpreter exit."""
    if getattr(system, "_systemBase", None) is not None:
        yield
        return
    system._systemBase = base
    try:
        yield
    finally:
        system._systemBase = None


def base_of(system: ActorSystem) -> Any:
    """What `reopened` needs: the running system's base."""
    return getattr(system, "_systemBase", None)


@contextlib.contextmanager
def private_endpoint(system: ActorSystem) -> Iterator[ActorSystem]:
    """A new external endpoint of `system`, for one thread, closed on exit.

    `ActorSystem.private()` fails on an endpoint that is itself private (its
    `BaseContext` has no `external_clone` in 4.0.1): such a context gets a
    sibling on the same admin instead. Unlike `private()`, the endpoint is
    closed even when the body raises.
    """
    base: Any = getattr(system, "_systemBase", None)
    if base is None:
        raise RuntimeError("the actor system was shut down")
    if hasattr(base, "external_clone"):
        clone = base.external_clone()
    else:
        from thespian.system.systemBase import BaseContext
        clone = BaseContext(base.adminAddr, base.transport)
    endpoint = ExternalContext(clone)
    try:
        yield endpoint
    finally:
        endpoint.exit_clone()


def status_request() -> Any:
    """Thespian's status request: every actor answers it from Thespian's own loop, also
    while it exits, so an answer proves the actor is there whatever its class."""
    from thespian.system.messages.status import Thespian_StatusReq

    return Thespian_StatusReq()


def is_status_of(message: Any, address: ActorAddress) -> bool:
    """`message` is the answer to `status_request` from the actor at `address`."""
    from thespian.system.messages.status import Thespian_ActorStatus

    return isinstance(message, Thespian_ActorStatus) and message.actorAddress == address


def system_key(system: ActorSystem) -> Hashable | None:
    """The same value for every endpoint of one running system (None once shut down).

    Multi-process endpoints share their admin's address; simpleSystemBase's
    private endpoints point back at the main one.
    """
    base: Any = getattr(system, "_systemBase", None)
    if base is None:
        return None
    admin = getattr(base, "adminAddr", None)
    if admin is not None:
        return f"admin {admin}"
    main = getattr(base, "mainsys", None)
    if callable(main):
        base = main()
    return id(base)
