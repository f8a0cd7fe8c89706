"""Goal 8 (issue 10): a `PachkaPool` of 1, 2 and 4 partitions against one server; and what a
hop to another admin of a convention costs against the same admin.

Workload: one producer thread sends `pool_messages` ints with a lingering handle
to a sink that burns `pool_work_us` of CPU per message, so exports, not the
producer, are the bottleneck: one server exports one batch at a time, a pool of
N up to N at once. Timed from the first send to the last delivery (the sink's
log counts every message). On a 2-core machine the producer, the servers and
their exporters share two cores: the gain is bounded by about 2x whatever N is.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from pachka_actors import Pachka, PachkaPool, Sink

from ._harness import (
    BenchmarkError,
    Echo,
    Row,
    Sizes,
    actor_system,
    median,
    scratch_dir,
    time_asks,
    wait_for,
)

BATCH = 100


class BusySink(Sink):
    """Burns CPU per message (`rounds` of hashing), then logs `count sum` for the batch."""

    def __init__(self, log_path: str, rounds: float) -> None:
        self.log_path = log_path
        self.rounds = max(1, round(rounds))

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        block = b"x" * 64
        for _ in range(len(messages) * self.rounds):
            block = hashlib.sha256(block).digest() * 2
        with open(self.log_path, "a") as log:
            log.write(f"{len(messages)} {sum(messages)}\n")


def delivered(log_path: str) -> tuple[int, int]:
    if not os.path.exists(log_path):
        return 0, 0
    with open(log_path) as log:
        pairs = [line.split() for line in log]
    return sum(int(c) for c, _ in pairs), sum(int(s) for _, s in pairs)


def calibrate_us() -> float:
    """Microseconds one hashing round takes here, so `pool_work_us` means what it says."""
    block, rounds = b"x" * 64, 20_000
    start = time.perf_counter()
    for _ in range(rounds):
        block = hashlib.sha256(block).digest() * 2
    return (time.perf_counter() - start) / rounds * 1e6


def throughput(log_path: str, messages: int, rounds: float, partitions: int | None) -> float:
    """Messages/s from the first send to the last delivery; None partitions: one `Pachka`."""
    options: dict[str, Any] = {"sink": BusySink(log_path, rounds), "max_batch_size": BATCH,
                               "max_batch_delay": 0.01, "critical_queue_size": messages + 1}
    with actor_system("multiprocTCPBase") as asys:
        sender: Pachka | PachkaPool
        if partitions is None:
            sender = Pachka.start(system=asys, **options)
        else:
            sender = PachkaPool.start(system=asys, partitions=partitions, **options)
        start = time.perf_counter()
        for i in range(messages):
            sender.send_message(i)
        sender.flush()
        wait_for(lambda: delivered(log_path)[0] >= messages, 300, f"{messages} deliveries",
                 poll=0.005)
        elapsed = time.perf_counter() - start
        sender.stop(60)
    if delivered(log_path) != (messages, messages * (messages - 1) // 2):
        raise BenchmarkError(f"{log_path}: expected {messages} messages once each, "
                             f"got {delivered(log_path)}")
    return messages / elapsed


class PlacedEcho(Echo):
    """The echo baseline, placed by capability (Echo itself would always stay local)."""

    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict[str, Any],
                                   requirements: dict[str, Any]) -> bool:
        return all(capabilities.get(k) == v for k, v in (requirements or {}).items())


def ask_latency(calls: int) -> tuple[float, float]:
    """Microseconds per ask from the leader's process: to an actor on the leader, and to
    one on a member (another admin; here on loopback, so no network cost)."""
    from pachka_actors.systems import isolated_convention

    with isolated_convention({"bench.host": "leader"}, ({"bench.host": "member"},)) as conv:
        asys = conv.leader.system
        local = asys.createActor(PlacedEcho, targetActorRequirements={"bench.host": "leader"})
        remote = asys.createActor(PlacedEcho, targetActorRequirements={"bench.host": "member"})
        time_asks(asys, local, 50)
        time_asks(asys, remote, 50)
        same, cross = [], []
        for _ in range(3):
            same.append(time_asks(asys, local, calls) / calls * 1e6)
            cross.append(time_asks(asys, remote, calls) / calls * 1e6)
    return median(same), median(cross)


def run(sizes: Sizes) -> list[Row]:
    n, work_us = sizes.pool_messages, sizes.pool_work_us
    rounds = work_us / calibrate_us()
    rows: list[Row] = []
    with scratch_dir() as tmp:
        logs = iter(os.path.join(tmp, f"pool-{i}.log") for i in range(10**9))
        contenders: list[tuple[str, int | None]] = [("one server", None), ("pool of 1", 1),
                                                    ("pool of 2", 2), ("pool of 4", 4)]
        rates: dict[str, float] = {}
        for name, partitions in contenders:
            samples = [throughput(next(logs), n, rounds, partitions)
                       for _ in range(min(sizes.reps, 3))]
            rates[name] = median(samples)
    base = rates["one server"]
    note = (f"{n:,} msgs, {work_us:.0f} us CPU/msg in the sink, batch {BATCH}; "
            f"{os.cpu_count()} cores bound the gain")
    for name, _ in contenders[1:]:
        rows.append(Row(8, f"{name}, export-bound (msg/s)", rates[name], "msg/s",
                        "one server", base, rates[name] / base, "informative", None, note,
                        tuple(rates.items())))
    same, cross = ask_latency(sizes.ask_calls)
    rows.append(Row(8, "ask to an actor on another admin (us)", cross, "us",
                    "same admin", same, cross / same, "informative", None,
                    f"{sizes.ask_calls} asks, loopback convention"))
    return rows
