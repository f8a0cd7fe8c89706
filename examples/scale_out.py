"""A keyed pool on two convention members, and what happens when one of them leaves.

On one machine: a leader admin and two members on loopback (docs/scale-out.md
shows the same capabilities on real hosts). A supervisor on the leader runs a
`PachkaPool` of two partitions that may run on any member with
`{"role": "batcher"}` (Thespian 4.0.1 put both on the same member when
measured). Events are routed by user, so each user's events stay in order. Then
the member hosting partition 0 shuts down gracefully: its partitions drain into
the sink before it goes (at least once: a batch being exported at that moment
is exported again, see docs/shutdown.md), the supervisor restarts them on the
other member, and the producer goes on after `refresh()`.

Run it with `python examples/scale_out.py`; tests/test_scale_out_example.py runs
`run` and checks its report.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

from pachka_actors import PachkaPool, Sink, Supervisor
from pachka_actors.systems import admin_port, isolated_convention


class EventSink(Sink):
    """Appends each batch, with the OS session (the admin) it was exported under."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "events.jsonl")

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        with open(self.path, "a") as out:
            out.write(json.dumps({"sid": os.getsid(0), "events": messages}) + "\n")


def user_of(event: dict[str, Any]) -> Any:
    return event["user"]


def run(directory: str, users: int = 6, per_user: int = 50) -> dict[str, Any]:
    with isolated_convention({"role": "leader"},
                             ({"role": "batcher", "zone": "a"},
                              {"role": "batcher", "zone": "b"})) as convention:
        system = convention.leader.system
        member_a, member_b = convention.members
        pool_spec = PachkaPool.child_spec(
            id="events", partitions=2, requirements={"role": "batcher"},
            sink=EventSink(directory), max_batch_size=100, max_batch_delay=0.2,
            max_restarts=10)
        supervisor = Supervisor.start([pool_spec], system=system, ask_timeout=30)
        [(_, pool_supervisor, _)] = supervisor.which_children()
        pool = PachkaPool.connect(system, pool_supervisor, key=user_of, ask_timeout=5)
        before = sorted(admin_port(p.host) or 0 for p in pool.status())

        def send(rounds: range) -> None:
            for n in rounds:
                for user in range(users):
                    pool.send_message({"user": user, "n": n})

        send(range(per_user))
        pool.flush()
        leaving = next(m for m in convention.members if m.port == admin_port(pool_host(pool)))
        convention.stop_member(leaving)  # graceful: its partitions drain, then exit

        deadline = time.monotonic() + 20
        while True:  # the supervisor restarts the partition on the member left
            pool.refresh()
            found = pool.status()
            if all(p.status is not None for p in found):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the partition did not come back: {found}")
            time.sleep(0.05)
        after = sorted(admin_port(p.host) or 0 for p in found)
        send(range(per_user, 2 * per_user))
        pool.close()
        supervisor.stop()  # drains the pool
        with open(os.path.join(directory, "events.jsonl")) as stored:
            batches = [json.loads(line) for line in stored]
        return {"members": {"a": member_a.port, "b": member_b.port}, "before": before,
                "after": after, "left": leaving.port,
                "sids": {"a": member_a.sid, "b": member_b.sid}, "batches": batches}


def pool_host(pool: PachkaPool) -> str | None:
    """The admin partition 0 runs on."""
    return pool.status()[0].host


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        report = run(tmp)
        events = [(e["user"], e["n"]) for b in report["batches"] for e in b["events"]]
        print(f"partitions on admin ports {report['before']}, then {report['after']} "
              f"(members {report['members']}); {len(set(events))} events stored, "
              f"{len(events) - len(set(events))} of them twice")
