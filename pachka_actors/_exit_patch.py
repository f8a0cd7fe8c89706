"""Until the server's own exit link replaces it: a handle's work at exit, by patching.

Each handle ships its buffer (and stops a server it started, as Pachka's
`start_link`) at interpreter exit, and ships before any `ActorSystem.shutdown()`,
whatever order the program's own exit hooks run in. That takes a process-wide
patch of `ActorSystem.shutdown`, kept here in one place so that it can go whole.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from typing import TYPE_CHECKING

from thespian.actors import ActorSystem

from ._base import system_key

if TYPE_CHECKING:
    from .pachka import Pachka

log = logging.getLogger(__name__)

#: Longest wait, per handle, of the work done for it at interpreter exit and before
#: `ActorSystem.shutdown()`: shipping its buffer, stopping a server it started.
EXIT_TIMEOUT = 10.0

_LIVE: weakref.WeakSet[Pachka] = weakref.WeakSet()
_HOOKS = threading.Lock()
_hooked = False


def track(handle: Pachka) -> None:
    """Do `handle`'s work before `ActorSystem.shutdown()` and at interpreter exit."""
    global _hooked
    with _HOOKS:
        _LIVE.add(handle)
        if not _hooked:
            _hooked = True
            original = ActorSystem.shutdown

            def shutdown(system: ActorSystem) -> None:
                key = system_key(system)
                if key is not None:
                    for live in list(_LIVE):
                        if live._courier.key == key:
                            _before_shutdown(live)
                original(system)

            shutdown.__doc__ = original.__doc__
            ActorSystem.shutdown = shutdown
        atexit.unregister(_at_exit)
        atexit.register(_at_exit)  # runs before exit hooks registered earlier


def _before_shutdown(handle: Pachka) -> None:
    """The server must have the handle's messages before the system goes down.

    simpleSystemBase sends actors no `ActorExitRequest` at shutdown, so a server
    the handle started is stopped (drained) here, or its queue would be lost.
    """
    timeout = _bound(handle.ask_timeout)
    if handle._owns_server and handle._courier.inline:
        try:
            handle.stop(timeout)
        except Exception as exc:
            log.error("%s: could not stop the server before the actor system shut down: "
                      "%s; its queued messages are lost", handle, exc)
    handle._owns_server = False
    try:
        handle._courier.end(timeout)
    except Exception as exc:
        log.error("%s: could not ship the buffer before the actor system shut down: %s",
                  handle, exc)
    handle._courier.down("the actor system was shut down")


def _at_exit() -> None:
    for handle in list(_LIVE):
        if handle._courier.gone is not None:
            continue
        try:
            if handle._owns_server:
                handle.stop(_bound(handle.ask_timeout))
            else:
                handle._courier.end(_bound(handle.ask_timeout))
        except Exception as exc:
            log.error("at exit, %s: %s (%d messages not confirmed by the server)", handle,
                      exc, handle._courier.credits.pending)


def _bound(timeout: float | None) -> float:
    return EXIT_TIMEOUT if timeout is None else min(timeout, EXIT_TIMEOUT)
