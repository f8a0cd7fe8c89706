"""A ledger sink that says which server process exports to it, for the crash-journal tests."""

from __future__ import annotations

import os
import time
from typing import Any

from pachka_actors.sinks import SQLiteSink


class ServerPidSink(SQLiteSink):
    """`SQLiteSink` with a ledger that writes the pid of its server (the exporter's parent)
    to `<directory>/server` before each batch, and takes `seconds` per batch, so that a
    test finds the server to SIGKILL with batches in flight."""

    def __init__(self, path: str, directory: str, seconds: float) -> None:
        super().__init__(path, "t", ["i"], ledger="ledger")
        self.directory = directory
        self.seconds = seconds

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        named = os.path.join(self.directory, f"server.{os.getpid()}")
        with open(named, "w") as file:
            file.write(str(os.getppid()))
        os.replace(named, os.path.join(self.directory, "server"))
        time.sleep(self.seconds)
        super().send_batch(messages, server_value)
