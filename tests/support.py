"""Real Thespian actor systems for tests: isolated, shut down, and never leaking a process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sinks import RecordingSink, delivered, wait_for
from thespian.actors import ActorSystem

from pachka_actors import Pachka
from pachka_actors._process import ended
from pachka_actors.messages import FireTimer, State, TimerKind
from pachka_actors.systems import isolated_system

#: An actor system that is shut down afterwards, its leftover processes killed.
actor_system = isolated_system


def process_gone(pid: int) -> bool:
    """The process has exited (a zombie counts)."""
    return ended(pid)


def start(system: ActorSystem, directory: Path, sink: type[RecordingSink] = RecordingSink,
          **options: Any) -> Pachka:
    options = {"max_batch_size": 5, "timers": "manual", "server_value": "sv", **options}
    return Pachka.start(system=system, sink=sink(directory), **options)


def fire(system: ActorSystem, server: Pachka, kind: TimerKind) -> None:
    timer = server.status().timer
    assert timer is not None and timer.kind is kind, f"no {kind} timer runs: {timer}"
    system.tell(server.address, FireTimer(timer))


def wait_state(server: Pachka, state: State) -> None:
    wait_for(lambda: server.status().state is state)


def wait_delivered(server: Pachka, directory: Path, count: int) -> None:
    """Until the sink has `count` messages; `status()` drives simpleSystemBase meanwhile."""
    wait_for(lambda: server.status() and len(delivered(directory)) >= count)


def touch(directory: Path, name: str, content: str = "") -> None:
    (directory / name).write_text(content)


def bare_exit_during_an_outage(directory: Path, **durable: Any) -> None:
    """A server whose sink is down holds 7 accepted messages (batches of 3) when its system
    is shut down without `stop()`: what `shutdown_timeout` leaves goes where `durable`
    (`spill_path` or `journal_path`) says, nothing to the sink."""
    touch(directory, "fail")  # the sink is down
    with actor_system("multiprocTCPBase") as system:
        server = Pachka.start(system=system, sink=RecordingSink(directory, retry_seconds=0.05),
                              shutdown_timeout=0.5, max_batch_size=3, max_batch_delay=0.01,
                              linger=None, **durable)
        assert server.send_messages(list(range(7))) == 7
        wait_for(lambda: server.stats().failures_raised >= 1)
        # leaving the block shuts the system down without stop(): the bare-exit path
    assert delivered(directory) == []


def restart_after_the_outage(directory: Path, **durable: Any) -> None:
    """The sink is back; a server on the same `durable` file sends what the last one kept
    first, in order, then what comes now."""
    os.remove(directory / "fail")
    with actor_system("multiprocTCPBase") as system:
        server = Pachka.start(system=system, sink=RecordingSink(directory), max_batch_size=3,
                              linger=None, **durable)
        server.send_messages([7, 8])
        server.stop()
    assert delivered(directory) == list(range(9))

