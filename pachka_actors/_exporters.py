"""Exporter actors: each runs `send_batch` for one batch, in its own process where the base
allows, so that a hung or crashing sink can be killed without touching the server."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

from thespian.actors import Actor, ActorAddress

from ._process import ProcessId
from .core import ExportFinished
from .errors import SinkError
from .sink import FailureReason, Sink


@dataclass(frozen=True, repr=False)
class ExportBatch:
    export_id: int
    batch: list[Any]
    sink: Sink
    server_value: Any

    def __repr__(self) -> str:
        return f"ExportBatch({self.export_id}, {len(self.batch)} messages)"


@dataclass(frozen=True)
class ExporterStarted:
    """Sent before `send_batch` runs, so that the server can SIGKILL a hung exporter."""

    export_id: int
    process: ProcessId


def run_export(sink: Sink, batch: list[Any], server_value: Any) -> FailureReason | None:
    """Call `send_batch`; the failure reason, picklable, or None on success."""
    try:
        result = sink.send_batch(batch, server_value)
    except Exception as exc:
        failure: BaseException = exc
    else:
        if not isinstance(result, BaseException):
            return None
        failure = result
    try:
        pickle.dumps(failure)
    except Exception:
        return SinkError(f"{type(failure).__name__}: {failure}")
    return failure



class Exporter(Actor):  # type: ignore[misc]
    """Exports one batch, then waits for the server to end it.

    It reports its process first so a hung `send_batch` can be killed, and never
    exits by itself: Thespian's `ChildActorExited` could then overtake the
    result, which would turn a delivered batch into a retried one.
    """

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, ExportBatch):
            self.send(sender, ExporterStarted(message.export_id, ProcessId.current()))
            failure = run_export(message.sink, message.batch, message.server_value)
            self.send(sender, ExportFinished(message.export_id, failure))
