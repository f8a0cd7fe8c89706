"""Sinks for the tests, steered and observed through files: they run in other processes.

A `RecordingSink` appends one JSON line per callback to `<dir>/log.jsonl` and
reads its orders from files in `<dir>`: `fail` (raise), `fail-return` (return an
exception), `block` (wait while the file exists), `hang` (sleep for ever; with
content `once`, only on the first attempt), `suicide` (SIGKILL its own process).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from thespian.actors import Actor, ActorAddress

from pachka_actors import Sink
from pachka_actors.messages import Stop, Stopped


class RecordingSink(Sink):
    def __init__(self, directory: str | Path, retry_seconds: float = 1.0) -> None:
        self.directory = str(directory)
        self.retry_seconds = retry_seconds

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def record(self, **entry: Any) -> None:
        line = json.dumps({"pid": os.getpid(), "ppid": os.getppid(), **entry}) + "\n"
        fd = os.open(self._path("log.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def send_batch(self, messages: list[Any], server_value: Any) -> BaseException | None:
        attempts = len(calls(self.directory, "enter"))
        self.record(call="enter", batch=messages, server_value=server_value)
        if os.path.exists(self._path("suicide")):
            os.kill(os.getpid(), signal.SIGKILL)
        hang = self._path("hang")
        if os.path.exists(hang) and (Path(hang).read_text() != "once" or attempts == 0):
            time.sleep(3600)
        while os.path.exists(self._path("block")):
            time.sleep(0.005)
        if os.path.exists(self._path("fail")):
            raise RuntimeError("sink down")
        if os.path.exists(self._path("fail-return")):
            return ConnectionError("sink refused")
        self.record(call="send_batch", batch=messages, server_value=server_value)
        return None

    def retry_timeout(self, retry_num: int, failure_reason: Any, server_value: Any) -> float:
        self.record(call="retry_timeout", retry_num=retry_num, reason=repr(failure_reason),
                    server_value=server_value)
        return self.retry_seconds


class SizedSink(RecordingSink):
    """Measures a message `[id, size]` as its `size` (ids stay unique down to 1 byte)."""

    def message_size(self, message: Any, server_value: Any) -> int:
        return int(message[1])


class DrainingRecordingSink(RecordingSink):
    """Also has Pachka's optional `drain_on_terminate`; fails it while `drain-fail` exists."""

    def drain_on_terminate(self, messages: list[Any], batch_size: int, server_value: Any) -> None:
        if os.path.exists(self._path("drain-fail")):
            raise OSError("fallback store down")
        self.record(call="drain_on_terminate", batch=messages, batch_size=batch_size,
                    server_value=server_value)


class SessionSink(RecordingSink):
    """Also records `setup` and `teardown`. While `setup-fail` exists `setup` raises
    (recorded as "setup-failed"); while `teardown-hang` exists `teardown` hangs."""

    def setup(self, server_value: Any) -> None:
        if os.path.exists(self._path("setup-fail")):
            self.record(call="setup-failed", server_value=server_value)
            raise ConnectionError("setup down")
        self.record(call="setup", server_value=server_value)

    def teardown(self, server_value: Any) -> None:
        self.record(call="teardown", server_value=server_value)
        if os.path.exists(self._path("teardown-hang")):
            time.sleep(3600)


class Unpicklable(Sink):
    def __init__(self) -> None:
        self.lock = threading.Lock()

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        pass


def calls(directory: str | Path, call: str | None = None) -> list[dict[str, Any]]:
    path = os.path.join(str(directory), "log.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        entries = [json.loads(line) for line in f]
    return [e for e in entries if call is None or e["call"] == call]


def delivered(directory: str | Path) -> list[Any]:
    """Every message handed to the sink successfully, in delivery order."""
    return [m for e in calls(directory)
            if e["call"] in ("send_batch", "drain_on_terminate") for m in e["batch"]]


def wait_for(condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll until `condition()` is truthy; the value, or AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.01)


class StopDriver(Actor):  # type: ignore[misc]
    """An actor inside the system that stops a server by message and remembers the reply.

    It lets a test stop a server without blocking on `Pachka.stop`, and shows the
    message API in use.
    """

    def receiveMessage(self, message: Any, sender: ActorAddress) -> None:
        if isinstance(message, tuple) and message[0] == "stop":
            self.stopped = False
            self.send(message[1], Stop())
        elif isinstance(message, Stopped):
            self.stopped = True
        elif message == "stopped?":
            self.send(sender, getattr(self, "stopped", False))
