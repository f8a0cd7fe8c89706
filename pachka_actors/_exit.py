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

import atexit
import logging
import os
import select
import signal
import threading
import time
import weakref
from typing import TYPE_CHECKING

from thespian.actors import ActorExitRequest

from ._ask import Answer, Ask, Caller
from ._base import Base, reopened, system_key
from ._link import Exiting, Link, Producer
from ._process import die_with_parent
from .core import ExitRequested, State
from .errors import plural
from .messages import SendMessages

if TYPE_CHECKING:
    from ._courier import Courier
    from .pachka import Pachka
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
    pool.begin_exit()
    server.handle(run, ExitRequested(), sender)
    listen(server, run)  # the handles ship what they hold, over the link
    while run.core.state is not State.STOPPED:
        due = timers.next_due()
        fds = pool.fds() + fds_of(run)
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


def listen(server: PachkaServer, run: Running) -> None:
    """Read the handles' links: once the server exits they are told so, and what they ship
    over them is handled as if it came by Thespian (answered over the link)."""
    for link in list(run.pool.producers):
        if run.exiting and link not in run.told:
            run.told.append(link)
            link.send(Exiting())
        for frame in link.receive():
            message, caller = Caller.of(frame, None, link)
            server.dispatch(run, message, caller)
        if link.closed:  # the handle closed, or its process ended
            run.pool.producers.remove(link)
            link.close()


def fds_of(run: Running) -> list[int]:
    """The handles' links, to wait on beside the exporters'."""
    return [link.fileno() for link in run.pool.producers]


# ---- a handle's side ------------------------------------------------------------------------


class Lifeline:
    """A handle's line to its server's link, from the same host (elsewhere none is made).

    When the server starts its bare exit it says `Exiting` here, and the handle
    ships what it holds over the line, since Thespian would deliver nothing now:
    so `ActorSystem.shutdown()` by this program or any other loses nothing a
    handle had accepted, with no hook in Thespian. The line closing means the
    server's process has ended: what is not confirmed then is lost.
    """

    def __init__(self, courier: Courier, name: str) -> None:
        self.courier = courier
        self.link = Link.connect(name)  # OSError: not on this host
        self.link.send(Producer())
        self.closed = threading.Event()  # by this side
        self.ended = threading.Event()  # the line is down, whoever closed it
        threading.Thread(target=self._run, daemon=True,
                         name=f"pachka-lifeline-{courier.address}").start()

    def _run(self) -> None:
        try:
            while (frame := self.link.next()) is not None:
                if isinstance(frame, Exiting):
                    for ship in self.courier.take_shipments():
                        self.link.send(Ask(ship.ref, SendMessages(ship.messages, ship.credit)))
                elif isinstance(frame, Answer):
                    self.courier.confirmed(frame.ref, frame.reply)
        finally:
            if not self.closed.is_set():  # not closed by this side: the server ended
                self.courier.server_ended()
            self.ended.set()

    def close(self) -> None:
        self.closed.set()
        self.link.close()


# ---- interpreter exit --------------------------------------------------------------------

#: Longest wait, per handle, of the work done for it at interpreter exit.
EXIT_TIMEOUT = 10.0

_LIVE: weakref.WeakSet[Pachka] = weakref.WeakSet()


def track(handle: Pachka) -> None:
    """`handle`'s work is done at interpreter exit (`at_exit`), before multiprocessing's
    own exit hook, which closes Thespian's queues on multiprocQueueBase: registered
    anew, since that hook moves itself last (first to run) when a system starts."""
    _LIVE.add(handle)
    atexit.unregister(at_exit)
    atexit.register(at_exit)


def _forget_handles() -> None:
    """A forked child is not the program that made the handles: their threads, lines and
    servers are its parent's, and a copy of a buffer is not the child's to ship, so the
    child's exit leaves them alone (Thespian's own children end by `os._exit` anyway)."""
    _LIVE.clear()


os.register_at_fork(after_in_child=_forget_handles)


def at_exit() -> None:
    """Every live handle ships what it holds; a server a handle started and did not stop
    ends with the program, as with Pachka's `start_link`: bounded, as by a bare exit
    (`shutdown_timeout`), and waited for. On simpleSystemBase, whose `shutdown()` ends
    no actor, it is stopped (drained) instead, even after the system was shut down."""
    from ._courier import system_lock

    for handle in list(_LIVE):
        courier = handle._courier
        bound = EXIT_TIMEOUT if handle.ask_timeout is None else min(handle.ask_timeout,
                                                                      EXIT_TIMEOUT)
        try:
            if courier.inline and handle._owns_server:
                with reopened(handle.system, courier.base):
                    handle.stop(bound)
            elif courier.gone is not None:
                continue
            elif handle._owns_server and system_key(handle.system) is not None:
                if courier.lifeline is None:  # else it ships over the lifeline, when told
                    courier.flush(bound)
                with system_lock(courier.key):
                    handle.system.tell(handle.address, ActorExitRequest())
                if courier.lifeline is not None:
                    courier.lifeline.ended.wait(bound)
            else:
                courier.flush(bound)
        except Exception as exc:
            log.error("at exit, %s: %s (%s not confirmed by the server)", handle,
                      exc, plural(courier.credits.pending, "message"))
