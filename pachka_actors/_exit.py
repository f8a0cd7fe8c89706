"""A server's bare exit: what it does with an `ActorExitRequest` it did not ask for.

`ActorSystem.shutdown()`, a parent's exit, or the death of its parent process
(SIGTERM, see `prepare`) send a server a bare `ActorExitRequest`. Thespian ends
the actor as soon as the handler returns and delivers nothing else meanwhile,
so the whole termination happens inside the handler: the core gets
`ExitRequested` (Pachka's stop, bounded by `shutdown_timeout`), and this loop
waits on the only sources left, the exporters' links (results, deaths) and the
server's own timers, feeding each into the same effect loop as ever. An export
in flight may finish, within `export_timeout`, as Pachka's docs promise; what
is still queued is exported through the same exporters, or drained.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time
from typing import TYPE_CHECKING

from ._ask import Caller
from ._base import Base
from ._process import die_with_parent
from .core import ExitRequested, State

if TYPE_CHECKING:
    from .server import PachkaServer, Running

log = logging.getLogger(__name__)

#: Seconds Thespian gets, once the exit handler returns, to deliver the server's last
#: messages (its `Stopped` replies, its exit notice) before the process ends anyway:
#: for a reply to an endpoint that is gone (a `stop(timeout)` that gave up) Thespian
#: would retry for 7 s, and the server would outlive `ActorSystem.shutdown()`.
LAST_WORDS = 2.0


def prepare(base: Base) -> None:
    """In a server's own process: if its parent (the admin, a supervisor) dies, Linux sends
    it SIGTERM, which Thespian turns into an `ActorExitRequest`: it finishes, then exits,
    instead of living on orphaned with what it holds."""
    if not base.inline:
        die_with_parent(signal.SIGTERM)


def finish(server: PachkaServer, run: Running, sender: Caller) -> None:
    """Run the core to its end inside the exit handler; returns once it is done."""
    if run.exiting:
        return  # a second request (a SIGTERM, Thespian's own) while the first is handled
    run.exiting = True  # from here on even manual timers fire: nobody fires them by hand
    timers, pool = run.timers, run.pool
    pool.exiting = True
    server.handle(run, ExitRequested(), sender)
    while run.core.state is not State.STOPPED:
        due = timers.next_due()
        fds = pool.fds()
        if not fds and due is None:
            log.error("Pachka %s: exiting in state %s with nothing to wait for",
                      run.name, run.core.state.value)
            break
        select.select(fds, [], [], None if due is None else max(0.0, due - time.monotonic()))
        server.poll(run, sender)
        server.fire_due(run, sender)
    pool.close()
    pool.forget()
    if run.pool.listener is not None:  # a process of its own: make sure it ends
        timer = threading.Timer(LAST_WORDS, os._exit, [0])
        timer.daemon = True  # a normal end does not wait for it
        timer.start()
