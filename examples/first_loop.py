"""The first loop a newcomer writes: a million `send_message` calls, with defaults.

`python examples/first_loop.py [N]` (default 1,000,000) prints the rate. Without
`wait=`, the loop outruns the exports and `send_message` raises `Overloaded` once
`critical_queue_size` messages wait (Pachka refuses too); `wait=` lets the server
hold the call until an export frees room, so the loop runs through.
tests/test_examples.py runs `run` with a smaller N.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from thespian.actors import ActorSystem

from pachka_actors import Pachka, Sink
from pachka_actors.systems import isolated_system


class CountingSink(Sink):
    """Stands in for a real sink: takes every batch and does nothing with it."""

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        pass


def run(asys: ActorSystem, count: int) -> dict[str, Any]:
    """Send `count` messages one by one with defaults; what was accepted and the rate."""
    start = time.perf_counter()
    # [start:example] shown in docs/getting-started.md
    with Pachka.start(asys, sink=CountingSink()) as server:
        for i in range(count):
            server.send_message(i, wait=30)  # hold the call while the queue is full
        server.flush()  # the handle ships what it buffered
        stats = server.stats()
    # [end:example]
    seconds = time.perf_counter() - start
    return {"accepted": stats.accepted, "refused": stats.refused_queue_full,
            "per_second": round(count / seconds)}


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with isolated_system("multiprocTCPBase") as system:
        print(run(system, n))
