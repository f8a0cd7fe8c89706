"""Helpers for the ready sinks' tests: a retry log, and driving a server's timers by hand.

`RetryLog` runs in the server actor (where `retry_timeout` is called), so it
reports through a file: the directory passed as the server's `server_value`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sinks import wait_for
from thespian.actors import ActorSystem

from pachka_actors import Pachka
from pachka_actors.messages import FireTimer, State, TimerKind
from pachka_actors.sink import FailureReason
from pachka_actors.sinks import TableSink


class RetryLog(TableSink[Any]):
    """Appends every retry's number, reason and chosen delay to `<server_value>/retries.jsonl`."""

    def retry_timeout(self, retry_num: int, failure_reason: FailureReason,
                      server_value: Any) -> float:
        delay = super().retry_timeout(retry_num, failure_reason, server_value)
        entry = {"retry_num": retry_num, "type": type(failure_reason).__name__,
                 "code": getattr(failure_reason, "code", None), "delay": delay}
        with open(os.path.join(server_value, "retries.jsonl"), "a") as log:
            log.write(json.dumps(entry) + "\n")
        return delay


def retries(directory: Path) -> list[dict[str, Any]]:
    path = directory / "retries.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def fire_when(system: ActorSystem, server: Pachka, state: State, kind: TimerKind) -> None:
    """Wait for `state`, then fire its `kind` timer now (the server runs with manual timers)."""
    wait_for(lambda: server.status().state is state)
    timer = server.status().timer
    assert timer is not None and timer.kind is kind, f"no {kind} timer runs: {timer}"
    system.tell(server.address, FireTimer(timer))
