"""A sink for the scale-out tests: records where each batch was exported (across admins).

Every call appends one JSON line to `<dir>/log.jsonl`: the exporter's pid, its
parent (the Pachka server, which forks its exporters) and its OS session (the
admin daemon it runs under). A file `hang-once` makes the first call hang.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from pachka_actors import Sink


class HostSink(Sink):
    def __init__(self, directory: str | Path) -> None:
        self.directory = str(directory)

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        hang = os.path.join(self.directory, "hang-once")
        if os.path.exists(hang):
            os.unlink(hang)
            _append(self.directory, {"call": "hang", "pid": os.getpid(), "ppid": os.getppid(),
                                     "sid": os.getsid(0)})
            time.sleep(3600)
        _append(self.directory, {"call": "send_batch", "pid": os.getpid(),
                                 "ppid": os.getppid(), "sid": os.getsid(0), "batch": messages})

    def retry_timeout(self, retry_num: int, failure_reason: Any, server_value: Any) -> float:
        return 0.05


def _append(directory: str, entry: dict[str, Any]) -> None:
    fd = os.open(os.path.join(directory, "log.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


def entries(directory: str | Path, call: str = "send_batch") -> list[dict[str, Any]]:
    path = Path(directory) / "log.jsonl"
    if not path.exists():
        return []
    found = [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in found if e["call"] == call]


def delivered(directory: str | Path) -> list[Any]:
    """Every message exported, in the order the batches were recorded."""
    return [m for e in entries(directory) for m in e["batch"]]
