"""Run as a script by tests/test_exit_paths.py: producers that end in the ways of issue 17.

`python exit_paths.py DIR MODE [ARGS]` prints the OS session id of its actor system
and the pids of the system itself (admin, logger, probe) before any server starts,
then writes what it saw to `DIR/result.json` (before `ActorSystem.shutdown()`, so a
hung shutdown still leaves it). Modes:

- `shutdown`: sends to an `SQLiteSink` whose write is slow after its commit for
  `SEND_SECONDS`, then only `ActorSystem.shutdown()`, no `stop()` (17.1).
- `sigint-shutdown`: sends until SIGINT (the test sends it once `DIR/ready`
  exists), then `finally: ActorSystem.shutdown()` (17.1, Ctrl-C).
- `sigint-stop`: the same, then `finally: stop(); ActorSystem.shutdown()`; the
  seconds `stop()` took are in the result (17.5).
- `late-class`: a message class defined in `__main__` after the system started,
  sent among good ones through a lingering handle, then `stop()` (17.4).
- `victim LINGER`: sends 500 messages; another program (`other PORT`) shuts the
  system down; then `flush()` and `stop()` (17.3). LINGER `long`: the 500 wait
  in the handle's buffer; `short`: they are delivered before the shutdown.
- `other PORT`: attaches to the admin on PORT and calls `ActorSystem.shutdown()`.
- `failing-stop SHUTDOWN`: a sink that always fails, then `stop()` (17.6), which
  the test interrupts with SIGINT; SHUTDOWN `yes` wraps it in
  `try/finally: ActorSystem.shutdown()`.

The counts are exact even under SIGINT: `uncertain` is 1 when the interrupt came
inside a `send_message` call, which may or may not have accepted its message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from exit_sinks import SlowCommitSQLiteSink, create_table
from fault_sinks import FaultSink, delivered, records
from support import process_gone

from pachka_actors import Pachka
from pachka_actors.systems import session_pids, start_system

#: How long mode `shutdown` sends before it shuts the system down.
SEND_SECONDS = 1.0
#: Messages sent before `DIR/ready` tells the test to send SIGINT (the queue is full by then).
READY_AFTER = 3000
#: Seconds the server's process may take to end once `stop()` returned or raised.
STOPPED_WITHIN = 3.0
TABLE = "create table events (seq integer primary key, kind text not null)"


def write_result(directory: Path, **result: Any) -> None:
    temporary = directory / "result.json.tmp"
    temporary.write_text(json.dumps(result))
    os.replace(temporary, directory / "result.json")


def error_of(exc: BaseException) -> dict[str, Any]:
    return {"type": type(exc).__name__, "text": str(exc), "count": getattr(exc, "count", None),
            "mro": [cls.__name__ for cls in type(exc).__mro__]}


def start(base: str = "multiprocTCPBase") -> Any:
    asys, sid = start_system(base)
    assert sid is not None
    print(sid, *session_pids(sid), flush=True)
    return asys


def sqlite_producer(directory: Path, mode: str) -> None:
    """17.1 and 17.5: a producer feeding a slow SQLite table, ended three ways."""
    db = directory / "events.db"
    create_table(db, TABLE)
    asys = start()
    server = Pachka.start(system=asys, sink=SlowCommitSQLiteSink(db, "events", ["seq", "kind"]),
                          max_batch_size=500, critical_queue_size=2000)
    accepted = uncertain = 0
    began = time.monotonic()
    try:
        while mode != "shutdown" or time.monotonic() - began < SEND_SECONDS:
            uncertain = 1
            server.send_message({"seq": accepted, "kind": "k"}, wait=30)
            uncertain = 0
            accepted += 1
            if accepted == READY_AFTER:
                (directory / "ready").touch()
    except KeyboardInterrupt:
        pass
    finally:
        result: dict[str, Any] = {"accepted": accepted, "uncertain": uncertain}
        try:
            if mode == "sigint-stop":
                began = time.monotonic()
                try:
                    server.stop()
                except Exception as exc:
                    result["stop_error"] = error_of(exc)
                result["stop_seconds"] = time.monotonic() - began
        finally:
            write_result(directory, **result)
            asys.shutdown()


def late_class(directory: Path, asys: Any, late: type) -> None:
    """17.4: `late` is a `__main__` class defined after the system started: `pickle` finds
    it here, the server's process (forked before) does not."""
    server = Pachka.start(system=asys, sink=FaultSink(directory), max_batch_size=50,
                          max_batch_delay=0.05)
    for i in range(100):
        server.send_message(i)
    server.send_message(late())
    for i in range(100, 200):
        server.send_message(i)
    # The program goes on with other work meanwhile: the shipment fails (its good messages
    # are sent again without the bad one) before `stop()` is called.
    deadline = time.monotonic() + 20
    while len(delivered(directory)) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    result: dict[str, Any] = {}
    try:
        server.stop(timeout=30)
    except Exception as exc:
        result["stop_error"] = error_of(exc)
    result["delivered"] = delivered(directory)  # what stop() had delivered when it ended
    [pid] = {batch["ppid"] for batch in records(directory, "batch")} or {None}
    result["server_pid"] = pid
    # Did stop() stop the server? Its process ends (a zombie counts) before shutdown() here.
    deadline = time.monotonic() + STOPPED_WITHIN
    while pid is not None and not process_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    result["server_ended"] = pid is not None and process_gone(pid)
    write_result(directory, **result)
    asys.shutdown()


def victim(directory: Path, linger: str) -> None:
    """17.3: program A, whose system another program shuts down."""
    asys = start()
    port = asys._systemBase.adminAddr.addressDetails.sockname[1]
    server = Pachka.start(system=asys, sink=FaultSink(directory), max_batch_size=100,
                          max_batch_delay=0.02, linger=3600 if linger == "long" else 0.005)
    accepted = 0
    for i in range(500):
        server.send_message(i)
        accepted += 1
    if linger == "short":
        deadline = time.monotonic() + 20
        while len(delivered(directory)) < accepted and time.monotonic() < deadline:
            time.sleep(0.01)
    with open(directory / "other.log", "w") as log:
        other = subprocess.run([sys.executable, __file__, str(directory), "other", str(port)],
                               stdout=log, stderr=log, timeout=60)
    result: dict[str, Any] = {"accepted": accepted, "other_exit": other.returncode}
    for call in ("flush", "stop"):
        try:
            getattr(server, call)()
        except Exception as exc:
            result[call] = error_of(exc)
        else:
            result[call] = None
    write_result(directory, **result)


def other(port: int) -> None:
    """17.3: program B, attached to A's admin, ends the system under A."""
    from thespian.actors import ActorSystem

    ActorSystem("multiprocTCPBase", {"Admin Port": port}, logDefs=None).shutdown()


def failing_stop(directory: Path, shutdown: str) -> None:
    """17.6: `stop()` with a sink that always fails, interrupted by SIGINT."""
    (directory / "down").touch()
    asys = start()
    server = Pachka.start(system=asys, sink=FaultSink(directory, "down", retry_seconds=0.05),
                          max_batch_size=50, max_batch_delay=0.02, shutdown_timeout=2)
    for i in range(100):
        server.send_message(i)
    server.flush()
    (directory / "stopping").touch()
    try:
        server.stop()
    finally:
        write_result(directory, interrupted=True)
        if shutdown == "yes":
            asys.shutdown()


if __name__ == "__main__":
    where, what = Path(sys.argv[1]), sys.argv[2]
    # Ctrl-C must raise KeyboardInterrupt here even when the test runs as a background
    # job of a non-interactive shell, which starts its children with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if what in ("shutdown", "sigint-shutdown", "sigint-stop"):
        sqlite_producer(where, what)
    elif what == "late-class":
        system = start()

        class Late:  # module level of __main__, after ActorSystem(): unknown to the server
            pass

        late_class(where, system, Late)
    elif what == "victim":
        victim(where, sys.argv[3])
    elif what == "other":
        other(int(sys.argv[3]))
    elif what == "failing-stop":
        failing_stop(where, sys.argv[3])
    else:
        raise SystemExit(f"unknown mode {what}")
