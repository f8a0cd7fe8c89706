"""AsyncPachka in real asyncio programs: the loop runs on while sends wait for room."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sinks import RecordingSink, calls, delivered, wait_for
from support import touch
from thespian.actors import ActorSystem

from pachka_actors import Overloaded, Pachka, Sink
from pachka_actors.aio import AsyncPachka
from pachka_actors.errors import NotStarted
from pachka_actors.testing import run_sink

SENDERS, EACH = 20, 10
#: Forks of this process while a test's asyncio program ran (Thespian forks from its admin).
FORKS: list[int] | None = None


def _forked() -> None:
    if FORKS is not None:
        FORKS.append(os.getpid())


os.register_at_fork(before=_forked)


def aio_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("pachka-aio")]


async def until(condition: Callable[[], Any], timeout: float = 20.0) -> None:
    """Poll without blocking the loop; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.005)


async def crowd(system: ActorSystem, directory: Path) -> dict[str, Any]:
    """SENDERS tasks send EACH messages each, waiting for room at a blocked sink, while
    a ticker counts the loop's turns; then the sink is unblocked and the server stopped."""
    server = await AsyncPachka.start(system, sink=RecordingSink(directory), max_batch_size=5,
                                     critical_queue_size=5, max_batch_delay=0.05,
                                     buffer_size=1)

    async def send_all(sender: int) -> None:
        for i in range(EACH):
            await server.send_message((sender, i), wait=30)

    senders = [asyncio.create_task(send_all(sender)) for sender in range(SENDERS)]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.002)
            ticks += not all(task.done() for task in senders)

    ticking = asyncio.create_task(ticker())
    # The sink holds the first batch; the queue fills; the other sends wait for room.
    await until(lambda: ticks >= 100 and calls(directory, "enter"))
    seen = {"ticks": ticks, "waiting": sum(not task.done() for task in senders),
            "entered": len(calls(directory, "enter"))}
    os.remove(directory / "block")
    await asyncio.gather(*senders)
    await server.stop()
    ticking.cancel()
    return seen


def test_waiting_senders_leave_the_loop_running(tcp_system: ActorSystem, tmp_path: Path) -> None:
    global FORKS
    touch(tmp_path, "block")
    FORKS = []
    try:
        seen = asyncio.run(crowd(tcp_system, tmp_path))
        forks = FORKS
    finally:
        FORKS = None
    assert seen["ticks"] >= 100 and seen["entered"] == 1
    assert seen["waiting"] > 0  # at most 10 of 200 fit while the sink held its batch
    messages = delivered(tmp_path)
    assert sorted(messages) == [[s, i] for s in range(SENDERS) for i in range(EACH)]
    for sender in range(SENDERS):  # each task's messages in the order it sent them
        assert [i for s, i in messages if s == sender] == list(range(EACH))
    assert forks == []  # the worker threads never lived in a process Thespian forked
    wait_for(lambda: not aio_threads())  # stop() ended the worker thread


@pytest.mark.parametrize("pachka_system", ["simpleSystemBase", "multiprocTCPBase"],
                         indirect=True)
def test_the_awaited_calls(pachka_system: ActorSystem, tmp_path: Path) -> None:
    # [start:calls] shown in docs/asyncio.md
    async def program() -> None:
        async with await AsyncPachka.start(pachka_system, sink=RecordingSink(tmp_path),
                                           max_batch_size=100, max_batch_delay=0.05) as server:
            await server.send_message("a")            # waits for room with wait=seconds
            assert await server.send_messages(["b", "c"]) == 2
            await server.flush()
            assert (await server.stats()).accepted == 3
            assert not (await server.status()).terminating
        # leaving the block stopped the server: everything accepted is delivered
    # [end:calls]
        with pytest.raises(NotStarted):  # left the block: stopped, as the sync handle
            await server.status()
        with pytest.raises(Overloaded):
            await server.send_message("d")

    asyncio.run(program())
    assert delivered(tmp_path) == ["a", "b", "c"]


def test_connect_and_wrap(tcp_system: ActorSystem, tmp_path: Path) -> None:
    started = Pachka.start(tcp_system, sink=RecordingSink(tmp_path), name="aio-server",
                           max_batch_delay=0.05)

    async def program() -> None:
        async with await AsyncPachka.connect(tcp_system, "aio-server") as connected:
            await connected.send_message("by name")
        wrapped = AsyncPachka(started)  # a handle made elsewhere
        await wrapped.send_message("wrapped")
        assert (await wrapped.stats()).accepted == 2  # leaving `connected` closed it only
        await wrapped.stop()

    asyncio.run(program())
    assert delivered(tmp_path) == ["by name", "wrapped"]


async def full_server(system: ActorSystem, directory: Path) -> AsyncPachka:
    """A server whose queue is full behind an export its sink holds (while `block` exists)."""
    touch(directory, "block")
    server = await AsyncPachka.start(system, sink=RecordingSink(directory), max_batch_size=2,
                                     critical_queue_size=2, max_batch_delay=None,
                                     buffer_size=1)
    for i in range(4):  # 2 in the export the sink holds, 2 queued: full
        await server.send_message(i, wait=10)
    await until(lambda: calls(directory, "enter"))
    return server


def test_a_cancelled_send_still_goes_in(tcp_system: ActorSystem, tmp_path: Path) -> None:
    async def program() -> None:
        server = await full_server(tcp_system, tmp_path)
        first = asyncio.create_task(server.send_message(4, wait=30))  # waits for room
        queued = asyncio.create_task(server.send_message(5, wait=30))  # waits behind it
        await asyncio.sleep(0)  # both calls made
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert not first.done()
        os.remove(tmp_path / "block")
        await first
        await server.stop()  # runs after the cancelled send, which found room too

    asyncio.run(program())
    assert delivered(tmp_path) == [0, 1, 2, 3, 4, 5]


async def write(path: str, messages: list[Any]) -> None:
    """An asyncio client library's write, as a sink would call it."""
    await asyncio.sleep(0)
    with open(path, "a") as file:
        file.writelines(f"{message}\n" for message in messages)


# [start:async-client] shown in docs/asyncio.md
class AsyncClientSink(Sink):
    """Writes through an asyncio client: one event loop per exporter, made in `setup`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def setup(self, server_value: Any) -> None:
        self.loop = asyncio.new_event_loop()  # in the exporter's process, before its batches

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        self.loop.run_until_complete(write(self.path, messages))

    def teardown(self, server_value: Any) -> None:
        self.loop.close()
# [end:async-client]


@pytest.mark.parametrize("pachka_system", ["simpleSystemBase", "multiprocTCPBase"],
                         indirect=True)
def test_a_sink_calls_an_async_client(pachka_system: ActorSystem, tmp_path: Path) -> None:
    path = str(tmp_path / "rows")
    assert run_sink(AsyncClientSink(path), ["a", "b", "c"], max_batch_size=2).failures == []

    async def program() -> None:
        async with await AsyncPachka.start(pachka_system, sink=AsyncClientSink(path),
                                           batches_per_exporter=None) as server:
            await server.send_messages(["d", "e"])

    asyncio.run(program())
    assert Path(path).read_text().split() == ["a", "b", "c", "d", "e"]


def test_wait_counts_from_the_call(tcp_system: ActorSystem, tmp_path: Path) -> None:
    """A send queued behind another that waits for room has waited meanwhile."""
    async def program() -> list[float]:
        server = await full_server(tcp_system, tmp_path)
        refused: list[float] = []

        async def send(message: int) -> None:
            with pytest.raises(Overloaded):
                await server.send_message(message, wait=1.0)
            refused.append(time.monotonic())

        await asyncio.gather(send(4), send(5))  # 5 runs once 4 is refused
        os.remove(tmp_path / "block")
        await server.stop()
        return refused

    first, second = asyncio.run(program())
    assert second - first < 0.5  # not a second more: its wait had passed behind the first
    assert delivered(tmp_path) == [0, 1, 2, 3]
