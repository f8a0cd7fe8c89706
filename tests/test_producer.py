"""`BufferedProducer` in a real actor, on simpleSystemBase and multiprocTCPBase.

The producer actor (tests/producer_actors.py) is observed by asking it: a test
waits until it reports its messages taken and confirmed by the server, then
looks at the server. Server timers are manual, so only the producer's own
wakeups (linger) run by themselves.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from producer_actors import Flush, Open, Produce, Produced, Producer, Report
from sinks import delivered, wait_for
from support import start, touch
from thespian.actors import ActorAddress, ActorExitRequest, ActorSystem, WakeupMessage

from pachka_actors import ActorTimeout, BufferedProducer, ConfigError, Overloaded, Pachka
from pachka_actors._ask import Answer, Ask
from pachka_actors.messages import Granted, RequestCredit, SendMessages


def open_producer(system: ActorSystem, server: Pachka, **options: Any) -> ActorAddress:
    producer = system.createActor(Producer)
    assert system.ask(producer, Open(server.address, options), 10) == "open"
    return producer


def report(system: ActorSystem, producer: ActorAddress) -> Produced:
    produced = system.ask(producer, Report(), 10)
    assert isinstance(produced, Produced), produced
    return produced


def settled(system: ActorSystem, producer: ActorAddress) -> Produced:
    """The report once nothing is pending, buffered or unconfirmed (the linger ran out)."""
    found: Produced = wait_for(lambda: (r := report(system, producer)).settled and r)
    return found


def test_messages_arrive_in_order_exactly_once(any_system: ActorSystem, tmp_path: Path) -> None:
    server = start(any_system, tmp_path, critical_queue_size=1000)
    producer = open_producer(any_system, server, buffer_size=7, linger=0.01)
    for first in range(0, 300, 50):
        any_system.tell(producer, Produce(list(range(first, first + 50))))
    produced = settled(any_system, producer)
    assert produced.accepted == list(range(300)) and not produced.errors
    server.stop()
    assert delivered(tmp_path) == list(range(300))


def test_overload_refused_exactly_at_critical_queue_size(any_system: ActorSystem,
                                                         tmp_path: Path) -> None:
    # No export runs (batches of 100, manual timers): the queue only fills.
    server = start(any_system, tmp_path, max_batch_size=100, critical_queue_size=25)
    producer = open_producer(any_system, server, buffer_size=10, linger=60)
    any_system.tell(producer, Produce(list(range(40))))
    produced = settled(any_system, producer)
    assert produced.accepted == list(range(25))
    assert len(produced.errors) == 1
    assert produced.errors[0].startswith("Overloaded: queue is at critical_queue_size=25")
    status = server.status()
    assert (status.queue_length, status.reserved) == (25, 0)
    server.stop()
    assert delivered(tmp_path) == list(range(25))


def produce_three(system: ActorSystem, directory: Path,
                  linger: float) -> tuple[Pachka, ActorAddress]:
    """A server that exports nothing by itself, and a producer told to send 1, 2, 3."""
    server = start(system, directory, max_batch_size=100)
    producer = open_producer(system, server, buffer_size=100, linger=linger)
    system.tell(producer, Produce([1, 2, 3]))
    return server, producer


def test_linger_ships_a_partial_buffer(any_system: ActorSystem, tmp_path: Path) -> None:
    server, producer = produce_three(any_system, tmp_path, linger=0.05)
    assert settled(any_system, producer).accepted == [1, 2, 3]  # neither full nor flushed
    assert server.status().queue_length == 3
    server.stop()
    assert delivered(tmp_path) == [1, 2, 3]


def test_flush_ships_at_once(any_system: ActorSystem, tmp_path: Path) -> None:
    server, producer = produce_three(any_system, tmp_path, linger=60)
    produced = wait_for(lambda: (r := report(any_system, producer)).accepted and r)
    assert (produced.accepted, produced.buffered) == ([1, 2, 3], 3)
    assert server.status().queue_length == 0
    assert any_system.ask(producer, Flush(), 10) == "flushed"
    assert server.status().queue_length == 3
    server.stop()
    assert delivered(tmp_path) == [1, 2, 3]


def test_actor_exit_ships_its_buffer(any_system: ActorSystem, tmp_path: Path) -> None:
    server, producer = produce_three(any_system, tmp_path, linger=60)
    wait_for(lambda: report(any_system, producer).buffered == 3)
    any_system.tell(producer, ActorExitRequest())
    # The grant is open until the shipment comes: a stopping server waits for it.
    server.stop(30)
    assert delivered(tmp_path) == [1, 2, 3]


def test_unpicklable_message_refused_at_send(any_system: ActorSystem, tmp_path: Path) -> None:
    server = start(any_system, tmp_path)
    producer = open_producer(any_system, server)
    any_system.tell(producer, "unpicklable")
    any_system.tell(producer, Produce([1]))
    produced = settled(any_system, producer)
    assert produced.accepted == [1]
    assert len(produced.errors) == 1 and produced.errors[0].startswith(
        "UnpicklableMessage: cannot send a lock")
    server.stop()
    assert delivered(tmp_path) == [1]


def test_bad_options_refused_in_the_actor(any_system: ActorSystem, tmp_path: Path) -> None:
    server = start(any_system, tmp_path)
    producer = any_system.createActor(Producer)
    refused = any_system.ask(producer, Open(server.address, {"buffer_size": 0}), 10)
    assert isinstance(refused, ConfigError) and refused.option == "buffer_size"
    server.stop()


@pytest.mark.parametrize(("options", "option"), [
    ({"buffer_size": 0}, "buffer_size"), ({"buffer_size": 2.5}, "buffer_size"),
    ({"linger": None}, "linger"), ({"linger": -1}, "linger"),
    ({"ask_timeout": "soon"}, "ask_timeout"),
])
def test_bad_options_name_the_option(options: dict[str, Any], option: str) -> None:
    actor = _Actor()
    with pytest.raises(ConfigError) as refused:
        BufferedProducer(actor, None, **options)
    assert refused.value.option == option
    assert not actor.sent, "nothing is sent with bad options"


def test_steady_producer_asks_ahead_and_never_waits() -> None:
    """The next room is asked for when half the current one is used; answered in time,
    `send` never says False, and the shipments keep the order."""
    actor = _Actor()
    producer = BufferedProducer(actor, "server", buffer_size=4, linger=1)
    for credit, first in enumerate(range(0, 12, 4)):
        asked = actor.requests(RequestCredit)
        assert len(asked) == credit + 1  # one request at a time
        assert producer.receive(Answer(asked[-1].ref, Granted(credit, 4)))
        assert producer.send(first) and producer.send(first + 1)
        assert len(actor.requests(RequestCredit)) == credit + 2  # half used: asked ahead
        assert producer.send(first + 2) and producer.send(first + 3)
    shipped = [m.request for m in actor.requests(SendMessages)]
    assert shipped == [SendMessages([0, 1, 2, 3], 0), SendMessages([4, 5, 6, 7], 1),
                       SendMessages([8, 9, 10, 11], 2)]


def test_refusal_raised_once_then_asked_again() -> None:
    actor, ready = _Actor(), []
    producer = BufferedProducer(actor, "server", on_ready=lambda: ready.append(1))
    assert not producer.send("a")  # the first room has not come yet
    producer.receive(Answer(actor.sent[-1].ref, Granted(None, 0, Overloaded("full"))))
    assert ready == [1]
    with pytest.raises(Overloaded, match="full"):
        producer.send("a")
    assert not producer.send("a") and len(actor.requests(RequestCredit)) == 2
    producer.receive(Answer(actor.sent[-1].ref, Granted(7, 1)))
    assert ready == [1, 1] and producer.send("a") and producer.unconfirmed == 1
    assert actor.sent[-2].request == SendMessages(["a"], 7)  # full: shipped at once...
    assert isinstance(actor.sent[-1].request, RequestCredit)  # ...then the next room asked


def test_unanswered_request_times_out_and_late_room_goes_back() -> None:
    actor = _Actor()
    producer = BufferedProducer(actor, "server", ask_timeout=5)
    request = actor.sent[-1]
    assert not producer.send("a")
    deadline = actor.wakeups[-1]
    assert deadline.delayPeriod == timedelta(seconds=5)
    assert producer.receive(deadline)
    with pytest.raises(ActorTimeout):
        producer.send("a")
    assert producer.receive(Answer(request.ref, Granted(3, 10)))
    assert actor.sent[-1].request == SendMessages([], 3)  # given back, unused
    assert not producer.receive(WakeupMessage(timedelta(0), "the actor's own"))


class _Actor:
    """Stands for the actor holding a producer: records what it sends."""

    def __init__(self) -> None:
        self.sent: list[Ask] = []
        self.wakeups: list[WakeupMessage] = []

    def send(self, targetAddr: ActorAddress, msg: Any) -> None:
        self.sent.append(msg)

    def wakeupAfter(self, timePeriod: timedelta, payload: Any = None) -> None:
        self.wakeups.append(WakeupMessage(timePeriod, payload))

    def requests(self, kind: type) -> list[Ask]:
        return [m for m in self.sent if isinstance(m.request, kind)]


def test_byte_limits_hold_for_an_actor_producer(tcp_system: ActorSystem,
                                                tmp_path: Path) -> None:
    """Grants reserve bytes: the queue takes what fits in `critical_queue_bytes` exactly;
    a message larger than `max_batch_bytes` is refused at `send`, never queued."""
    touch(tmp_path, "block")  # the first batch stays in flight: the queue only fills
    server = start(tcp_system, tmp_path, max_batch_size=100, max_batch_bytes=10,
                   critical_queue_bytes=30)
    producer = open_producer(tcp_system, server, buffer_size=10, linger=60)
    messages = [f"m{i:04d}" for i in range(20)]  # 5 bytes each: 2 to a batch
    tcp_system.tell(producer, Produce(messages))
    produced = settled(tcp_system, producer)
    assert produced.accepted == messages[:8]  # 2 in flight, then 30 bytes queued
    assert [e.split(" (")[0] for e in produced.errors] == [
        "Overloaded: queue is at critical_queue_bytes=30"]
    assert server.status().queue_bytes == 30
    tcp_system.tell(producer, Produce(["x" * 11]))
    produced = settled(tcp_system, producer)
    assert produced.errors[1].startswith("MessageTooLarge: a message of 11 bytes is larger "
                                         "than max_batch_bytes=10")
    (tmp_path / "block").unlink()
    server.stop()
    assert delivered(tmp_path) == messages[:8]
