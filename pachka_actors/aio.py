"""`AsyncPachka`: the handle for asyncio programs, awaiting the sync handle's calls.

A `Pachka` call can block: for the server's reply, for room (`wait=`), for a
drain (`stop`). Here each call runs in a worker thread of the handle's own, one
(`max_workers=1`), so calls keep the order they were made in, the sync handle
is used from one thread, and the event loop never waits. Thespian forks actor
processes from its admin, not from this process (the one fork here is the
admin's, in `ActorSystem(...)`): create the actor system before the handle, as
`start` then starts the worker thread. See docs/asyncio.md.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

from thespian.actors import ActorAddress, ActorSystem

from ._options import seconds
from .messages import ServerStatus
from .metrics import Stats
from .pachka import Pachka

log = logging.getLogger(__name__)

T = TypeVar("T")


class AsyncPachka:
    """A `Pachka` handle whose calls are awaited; as `async with`, it stops on leaving
    a server it started, and closes otherwise.

    Calls run one at a time, in the order made, in the handle's worker thread: a
    `send_message` waiting for room holds up the calls made after it, as it
    would in one thread. Cancelling the task that awaits a call does not cancel
    the call: once made, it runs to its end in the worker (a cancelled
    `send_message` still queues its message if room comes within `wait`), and
    an error it ends with is logged, as nobody awaits it.
    """

    def __init__(self, handle: Pachka) -> None:
        """Await the calls of `handle`, made elsewhere; the worker thread starts at the
        first call."""
        #: The sync handle, for code in other threads (it is thread-safe).
        self.handle = handle
        self._executor: ThreadPoolExecutor | None = None  # None: the next call starts one

    @classmethod
    async def start(cls, system: ActorSystem, **options: Any) -> AsyncPachka:
        """`Pachka.start(system=system, **options)`, awaited (docs/options.md)."""
        return await cls._open(functools.partial(Pachka.start, system, **options))

    @classmethod
    async def connect(cls, system: ActorSystem, server: str | ActorAddress,
                      **handle: Any) -> AsyncPachka:
        """`Pachka.connect(system, server, **handle)`, awaited: a started server, by name
        or address."""
        return await cls._open(functools.partial(Pachka.connect, system, server, **handle))

    @classmethod
    async def _open(cls, opening: Callable[[], Pachka]) -> AsyncPachka:
        executor = _new_worker()
        try:
            handle = await _run(executor, opening)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        opened = cls(handle)
        opened._executor = executor
        return opened

    # ---- feeding the server ------------------------------------------------------------

    async def send_message(self, message: Any, *, wait: float = 0.0) -> None:
        """`Pachka.send_message`, awaited: `Overloaded` when there is no room within `wait`
        seconds, counted from this call (time spent behind earlier calls of this
        handle counts)."""
        deadline = time.monotonic() + seconds("wait", wait)
        handle = self.handle

        def send() -> None:
            handle.send_message(message, wait=max(0.0, deadline - time.monotonic()))

        await self._call(send)

    async def send_messages(self, messages: Iterable[Any]) -> int:
        """`Pachka.send_messages`, awaited: how many of `messages` were accepted."""
        return await self._call(self.handle.send_messages, list(messages))

    # ---- asking ------------------------------------------------------------------------

    async def status(self) -> ServerStatus:
        """`Pachka.status`, awaited: after the calls made before it."""
        return await self._call(self.handle.status)

    async def stats(self) -> Stats:
        """`Pachka.stats`, awaited: after the calls made before it."""
        return await self._call(self.handle.stats)

    async def flush(self, timeout: float | None = None) -> None:
        """`Pachka.flush`, awaited: the server has what was sent before."""
        await self._call(self.handle.flush, timeout)

    # ---- ending ------------------------------------------------------------------------

    async def stop(self, timeout: float | None = None) -> None:
        """`Pachka.stop`, awaited: every accepted message is delivered or drained and the
        server exited; the worker thread ends after it."""
        await self._finish(functools.partial(self.handle.stop, timeout))

    async def close(self) -> None:
        """`Pachka.close`, awaited: the server runs on; the worker thread ends after it."""
        await self._finish(self.handle.close)

    async def __aenter__(self) -> AsyncPachka:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        """As the sync handle's `with`: stop the server it started (else close)."""
        await self._finish(functools.partial(self.handle.__exit__, kind, error, traceback))

    async def _finish(self, ending: Callable[[], None]) -> None:
        """End the handle, then the worker thread, once the calls queued before are done
        (a later call starts a new one, as the sync handle's courier thread)."""
        executor = self._worker()
        try:
            await _run(executor, ending)
        finally:
            if self._executor is executor:
                self._executor = None
            executor.shutdown(wait=False)

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        return await _run(self._worker(), functools.partial(function, *args))

    def _worker(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = _new_worker()
        return self._executor

    def __repr__(self) -> str:
        return f"AsyncPachka({self.handle.address})"


def _new_worker() -> ThreadPoolExecutor:
    """One thread: the handle's calls run in order, and from one thread."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="pachka-aio")


async def _run(executor: ThreadPoolExecutor, function: Callable[[], T]) -> T:
    """`function()` in `executor`; a cancelled await leaves it running, its error logged."""
    running = asyncio.get_running_loop().run_in_executor(executor, function)
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        running.add_done_callback(_abandoned)
        raise


def _abandoned(running: asyncio.Future[Any]) -> None:
    if not running.cancelled() and running.exception() is not None:
        log.error("a pachka_actors call whose awaiting task was cancelled failed",
                  exc_info=running.exception())
