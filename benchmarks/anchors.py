"""The anchors: bare Thespian costs on multiprocTCPBase, measured in the same run.

They bound what any design on this transport can reach: an ask is the price of
a synchronous `send_message`, an ask carrying a list of 1,000 is the price of
shipping a list, and creating a child that answers one message is the least an
exporter actor per batch can cost (Pachka's server starts the next one only
after the previous answered, as this does).
"""

from __future__ import annotations

import time
from typing import Any

from thespian.actors import Actor, ActorAddress, ActorExitRequest

from ._harness import BenchmarkError, Echo, Row, Sizes, actor_system, median, repeat, time_asks

LIST = 1_000


class Child(Actor):  # type: ignore[misc]
    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if message == "ping":
            self.send(sender, "pong")


class Spawner(Actor):  # type: ignore[misc]
    """Asked with a count: creates that many children in turn, each pinged, answered, ended."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.left = 0
        self.requester: ActorAddress | None = None

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, int):
            self.left, self.requester = message, sender
            self.send(self.createActor(Child), "ping")
        elif message == "pong":
            self.send(sender, ActorExitRequest())
            self.left -= 1
            if self.left:
                self.send(self.createActor(Child), "ping")
            else:
                self.send(self.requester, "done")


def run(sizes: Sizes) -> list[Row]:
    calls, children = sizes.ask_calls, max(sizes.ask_calls // 40, 5)
    with actor_system() as asys:
        echo, spawner = asys.createActor(Echo), asys.createActor(Spawner)
        ask = median(repeat(sizes.reps, lambda: time_asks(asys, echo, calls))) / calls
        lists = median(repeat(sizes.reps, lambda: time_asks(asys, echo, calls // 10,
                                                            LIST))) / (calls // 10)

        def spawn() -> float:
            start = time.perf_counter()
            if asys.ask(spawner, children, 60) != "done":
                raise BenchmarkError("the spawner did not finish")
            return time.perf_counter() - start

        child = median(repeat(sizes.reps, spawn)) / children
    return [
        Row(0, "TCP ask round trip from outside", ask * 1e6, "us", "", 0, 0, "anchor", None,
            f"= {1 / ask:,.0f} msg/s one at a time"),
        Row(0, f"TCP ask round trip carrying a list of {LIST:,} ints", lists * 1e6, "us", "", 0,
            0, "anchor", None, f"= {LIST / lists:,.0f} msg/s in lists"),
        Row(0, "TCP create child actor, one message each way, exit", child * 1e3, "ms", "", 0,
            0, "anchor", None, f"= {500 / child:,.0f} msg/s with one actor per 500-batch"),
    ]
