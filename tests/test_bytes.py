"""Byte limits on real systems: `max_batch_bytes` is a hard ceiling, `critical_queue_bytes`
refuses exactly, and a message no batch could hold is refused at the call that sent it."""

from __future__ import annotations

import random
from itertools import pairwise
from pathlib import Path

import pytest
from sinks import SizedSink, calls, delivered, wait_for
from support import start, touch
from thespian.actors import ActorSystem

from pachka_actors import ConfigError, MessagesLost, Overloaded, Pachka
from pachka_actors.errors import MessageTooLarge
from pachka_actors.messages import Accepted, SendMessages
from pachka_actors.sink import sizer

LIMIT = 1000


def sized(count: int, seed: int) -> list[str]:
    """`count` ASCII messages (their default size is their length) of 1 byte to LIMIT,
    both ends included, each starting with its number where it has room for it."""
    rng = random.Random(seed)
    sizes = [1, LIMIT, *(rng.choice([rng.randint(1, 20), rng.randint(1, LIMIT)])
                         for _ in range(count - 2))]
    rng.shuffle(sizes)
    return [f"{i}:".ljust(size, "x")[:size] for i, size in enumerate(sizes)]


def test_no_batch_over_the_ceiling_with_mixed_sizes(tcp_system: ActorSystem,
                                                    tmp_path: Path) -> None:
    """From a lingering handle: every message once, in order; no batch over either limit;
    every batch but the last went out as soon as the next message would not fit."""
    messages = sized(400, seed=19)
    server = start(tcp_system, tmp_path, max_batch_size=50, max_batch_bytes=LIMIT,
                   critical_queue_bytes=20 * LIMIT, buffer_size=64)
    for message in messages:
        server.send_message(message, wait=30.0)
    with pytest.raises(MessageTooLarge) as error:
        server.send_message("y" * (LIMIT + 1))
    assert (error.value.size, error.value.limit) == (LIMIT + 1, LIMIT)
    assert f"{LIMIT + 1} bytes" in str(error.value) and f"max_batch_bytes={LIMIT}" in str(
        error.value)
    server.stop()
    assert delivered(tmp_path) == messages  # the oversized one was never queued
    batches = [entry["batch"] for entry in calls(tmp_path, "send_batch")]
    assert max(sum(map(len, batch)) for batch in batches) <= LIMIT
    assert max(map(len, batches)) <= 50
    for batch, after in pairwise(batches):
        assert len(batch) == 50 or sum(map(len, batch)) + len(after[0]) > LIMIT, \
            "a batch went out before it was full"
    assert any(sum(map(len, batch)) == LIMIT for batch in batches)  # the LIMIT-byte one


def test_a_list_holding_an_oversized_message_is_refused_whole(tcp_system: ActorSystem,
                                                              tmp_path: Path) -> None:
    server = start(tcp_system, tmp_path, max_batch_bytes=10, linger=None)
    with pytest.raises(MessageTooLarge) as error:
        server.send_messages(["a", "b" * 10, "c" * 11, "d"])
    assert (error.value.index, error.value.size, error.value.limit) == (2, 11, 10)
    assert str(error.value).endswith("; none of the list was queued"), error.value
    with pytest.raises(MessageTooLarge):  # also one by one, without lingering
        server.send_message("e" * 11)
    assert server.send_messages(["f", "g" * 10]) == 2
    assert server.stats().refused_too_large == 5
    server.stop()
    assert delivered(tmp_path) == ["f", "g" * 10]


def test_critical_queue_bytes_refuses_exactly(tcp_system: ActorSystem, tmp_path: Path) -> None:
    """Through a lingering handle's grants: the queue takes what fits in bytes, no more,
    and `Overloaded` says which limit was reached; `stats()` reports the queued bytes."""
    touch(tmp_path, "block")
    server = start(tcp_system, tmp_path, max_batch_size=1000, max_batch_bytes=300,
                   critical_queue_bytes=1000)
    server.send_message("0".ljust(300, "x"))  # a full batch: out to the (blocked) sink
    wait_for(lambda: calls(tmp_path, "enter"))
    accepted = []
    with pytest.raises(Overloaded) as error:
        for i in range(1, 100):
            server.send_message(str(i).ljust(150, "x"))
            accepted.append(i)
    assert error.value.limit == "critical_queue_bytes" and not error.value.terminating
    assert len(accepted) == 1000 // 150  # 6 fit in 1000 bytes; the 7th does not
    stats = server.stats()
    assert (stats.queue_length, stats.queue_bytes) == (6, 900)
    assert stats.refused_queue_full == 1
    server.send_message("z" * 100)  # 100 bytes still fit, exactly
    with pytest.raises(Overloaded):
        server.send_message("!")
    (tmp_path / "block").unlink()
    server.stop()
    assert len(delivered(tmp_path)) == 1 + 6 + 1


def test_connect_measures_with_the_sink_it_is_given(tcp_system: ActorSystem,
                                                    tmp_path: Path) -> None:
    """A handle from `connect(sink=...)` refuses at the call what the server would; one
    without it measures otherwise, and the server refuses the message it took: reported
    lost, never queued."""
    sink = SizedSink(tmp_path)
    started = Pachka.start(system=tcp_system, sink=sink, name="sized", max_batch_size=5,
                           max_batch_bytes=LIMIT, timers="manual")
    with pytest.raises(ConfigError) as refused:
        Pachka.connect(tcp_system, "sized", sink=SizedSink)  # type: ignore[arg-type]
    assert refused.value.option == "sink"
    told = Pachka.connect(tcp_system, "sized", sink=sink)
    told.send_message([0, 1])
    with pytest.raises(MessageTooLarge):
        told.send_message([1, LIMIT + 1])
    told.close()
    blind = Pachka.connect(tcp_system, "sized")
    blind.send_message([2, LIMIT])
    blind.send_message([3, LIMIT + 1])  # a small pickle: it takes it
    with pytest.raises(MessagesLost, match=f"max_batch_bytes={LIMIT}"):
        blind.flush()
    with pytest.raises(MessagesLost):
        blind.close()
    started.stop()
    assert delivered(tmp_path) == [[0, 1], [2, LIMIT]]


def test_a_producer_actor_sending_directly_is_answered_too_large(tcp_system: ActorSystem,
                                                                 tmp_path: Path) -> None:
    server = start(tcp_system, tmp_path, max_batch_bytes=4)
    reply = tcp_system.ask(server.address, SendMessages(["12345", "1"]), 10)
    assert isinstance(reply, Accepted) and reply.count == 0
    assert isinstance(reply.refused, MessageTooLarge) and reply.refused.index == 0
    server.stop()


def test_a_sink_class_for_a_producer_is_refused_naming_the_option(tmp_path: Path) -> None:
    """`BufferedProducer(sink=...)` measures through the same `sizer` as `Pachka.connect`:
    a class where the instance belongs is a `ConfigError` there too, at the call, not an
    `AttributeError` at the first message measured."""
    with pytest.raises(ConfigError) as refused:
        sizer(SizedSink, None)  # type: ignore[arg-type]
    assert refused.value.option == "sink"
    assert sizer(SizedSink(tmp_path), None)([0, 1]) > 0
