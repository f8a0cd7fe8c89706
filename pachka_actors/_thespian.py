"""Every use of Thespian's private internals, in one place (Thespian 4.0.x).

Thespian has no public way to find a child's OS process, to steer which
children it stops when an actor exits, or to tell which base a system runs.
tests/test_thespian_internals.py fails loudly when an installed Thespian no
longer has what these functions read; each degrades to "unknown" rather than
guessing wrong.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Hashable, Iterator
from typing import Any

from thespian.actors import Actor, ActorAddress, ActorSystem, ExternalContext

from ._process_old import ProcessId


def child_process(actor: Actor, address: ActorAddress) -> ProcessId | None:
    """The OS process of the child that `actor` has just created at `address`, or None.

    On the multi-process bases, `createActor` inside an actor forks the child at
    once, as an OS child of the actor's process, and records it in Thespian's
    `_child_procs`. Under simpleSystemBase, or for a child created through the
    Admin (globalName, capability placement), there is no such record.
    """
    for info in getattr(getattr(actor, "_myRef", None), "_child_procs", ()):
        if info.childAddr == address:
            return ProcessId(info.childProc.pid, socket.gethostname())
    return None


def exit_children(actor: Actor) -> list[ActorAddress] | None:
    """Thespian's list of the children it stops and awaits when `actor` exits (mutable).

    None under simpleSystemBase, which has no such list to steer.
    """
    children = getattr(getattr(actor, "_myRef", None), "_children", None)
    return children if isinstance(children, list) else None


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


def notices_exits_at_once(actor: Actor) -> bool:
    """Whether Thespian reports a child's exit to `actor` within milliseconds: TCP and UDP
    do; multiprocQueueBase polls every ~2 s, long enough to stall a shutdown."""
    transport = getattr(getattr(actor, "_myRef", None), "transport", None)
    return type(transport).__name__ in ("TCPTransport", "UDPTransport")


def base_name(system: ActorSystem) -> str:
    """The system base's name, e.g. "simpleSystemBase" (what `ActorSystem(...)` was given)."""
    base: Any = getattr(system, "_systemBase", None)
    return type(base).__module__.rsplit(".", 1)[-1] if base is not None else "unknown"


def runs_in_caller_thread(system: ActorSystem) -> bool:
    """Actors run in the caller's thread (simpleSystemBase): nothing runs between calls."""
    return base_name(system) == "simpleSystemBase"


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
