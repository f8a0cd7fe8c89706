"""Goal 9 (issue 8, direction 4): an actor producing for a server, before and after
`BufferedProducer`.

Workload: a server (max_batch_size 500, other options default) whose sink only
logs one line per batch, on multiprocTCPBase; one producer actor sends N ints
one by one; the clock runs from the order to start until the sink has logged
all N, and every run is checked (0..N-1 exactly once, in order, batches <= 500).

- before: what an actor does today with exact overload: one `SendMessage` at a
  time, the next once its `Accepted` came (a refusal is resent after 1 ms);
- after: `BufferedProducer` with default options (buffer_size 1,000, linger
  5 ms): the actor sends until `send` returns False, resumes in `on_ready`, and
  resends a refused message (`Overloaded`) after 1 ms.

The two alternate repetition by repetition; figures are medians. The before
side runs fewer messages in full runs (`producer_before`): at a round trip per
message it would otherwise take minutes; its rate does not depend on N.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from thespian.actors import Actor, ActorAddress, WakeupMessage

from pachka_actors import BufferedProducer, Overloaded, Pachka
from pachka_actors.messages import Accepted, SendMessage

from ._harness import Row, Sizes, actor_system, interleave, median, scratch_dir, wait_for
from ._sinks import RecordingSink, delivered, verify

GOAL = 9
BATCH = 500
RESEND = timedelta(milliseconds=1)


@dataclass(frozen=True)
class Go:
    server: ActorAddress
    messages: int


class OneByOne(Actor):  # type: ignore[misc]
    """Before: a `SendMessage` per message, the next once the previous was accepted."""

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, Go):
            self.go, self.next, self.resends = message, 0, 0
            self.send(message.server, SendMessage(0))
        elif isinstance(message, Accepted) and not message.count:
            self.resends += 1
            self.wakeupAfter(RESEND)
        elif isinstance(message, Accepted):
            self.next += 1
            if self.next < self.go.messages:
                self.send(self.go.server, SendMessage(self.next))
        elif isinstance(message, WakeupMessage):
            self.send(self.go.server, SendMessage(self.next))
        elif message == "resends":
            self.send(sender, self.resends)


class Buffered(Actor):  # type: ignore[misc]
    """After: `BufferedProducer.send` per message, resuming on `on_ready`."""

    producer: BufferedProducer | None = None

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if self.producer is not None and self.producer.receive(message):
            return
        if isinstance(message, Go):
            self.go, self.next, self.resends = message, 0, 0
            self.producer = BufferedProducer(self, message.server, on_ready=self.pump)
            self.pump()
        elif isinstance(message, WakeupMessage):
            self.pump()
        elif message == "resends":
            self.send(sender, self.resends)

    def pump(self) -> None:
        assert self.producer is not None
        send, total = self.producer.send, self.go.messages
        try:
            while self.next < total and send(self.next):
                self.next += 1
        except Overloaded:
            self.resends += 1
            self.wakeupAfter(RESEND)


def seconds(producer: type[Actor], log: str, messages: int, resends: list[int]) -> float:
    """From the order to start until the sink logged all `messages`; checked afterwards."""
    with actor_system("multiprocTCPBase") as asys:
        server = Pachka.start(system=asys, sink=RecordingSink(log), max_batch_size=BATCH)
        actor = asys.createActor(producer)
        start = time.perf_counter()
        asys.tell(actor, Go(server.address, messages))
        wait_for(lambda: delivered(log) >= messages, 60 + messages / 100,
                 f"{messages} messages from {producer.__name__}", poll=0.002)
        elapsed = time.perf_counter() - start
        resends.append(asys.ask(actor, "resends", 10))
        server.stop()
    verify(log, messages, BATCH)
    os.remove(log)
    return elapsed


def run(sizes: Sizes) -> list[Row]:
    n, n_before = sizes.producer_messages, sizes.producer_before
    resends: dict[str, list[int]] = {"before": [], "after": []}
    with scratch_dir() as tmp:
        log = os.path.join(tmp, "sink.log")
        before, after = interleave(
            sizes.reps,
            lambda: n_before / seconds(OneByOne, log, n_before, resends["before"]),
            lambda: n / seconds(Buffered, log, n, resends["after"]))
    rate_before, rate_after = median(before), median(after)
    note = (f"actor producer, multiprocTCPBase, batch {BATCH}; after: {n:,} msgs, "
            f"BufferedProducer defaults, resends {sum(resends['after'])}; before: "
            f"{n_before:,} msgs, SendMessage then Accepted, resends {sum(resends['before'])}; "
            f"median of {sizes.reps}")
    return [Row(GOAL, "actor producer, BufferedProducer (msg/s)", rate_after, "msg/s",
                "SendMessage per message", rate_before, rate_after / rate_before,
                "informative", None, note,
                (("SendMessage per message", rate_before), ("BufferedProducer", rate_after)))]
