"""Bulk ingest until it finishes or a hard timeout: the run that once hung under load (issue 8).

`python -m benchmarks.ingest_probe [--runs N] [--remote] [--timeout S] [--sink-pause S]`
(redirect its output to a file: the admins inherit stdout). Each run
starts a fresh multiprocTCPBase system, a server with max_batch_size 5,000 and a
counting sink, sends 200,000 ints with `send_messages` of 1,000-lists (resending
the refused tail after 1 ms), stops the server and shuts the system down.
`--remote` produces from a process started with multiprocessing's spawn that
attaches by admin port and uses `Pachka.connect`, as benchmarks/ingest.py does;
`--sink-pause` makes exports slow, so that producers meet `Overloaded` and resend;
`--owner-stop` has the starting process call `stop()` after the producer's.
A run that passes its timeout prints the pids of the system's processes still
alive and every thread's stack (faulthandler), then exits with status 3, leaving
those processes running for `py-spy dump`.
"""

from __future__ import annotations

import argparse
import faulthandler
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from thespian.actors import ActorSystem

from pachka_actors import Pachka, Sink
from pachka_actors.systems import session_pids, start_system

MESSAGES = 200_000
CHUNK = 1_000
BATCH = 5_000


class CountingSink(Sink):
    """Appends each batch's length to a file: the exporters are other processes."""

    def __init__(self, path: str, pause: float = 0.0) -> None:
        self.path = path
        self.pause = pause

    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        time.sleep(random.uniform(0.0, self.pause))
        with open(self.path, "a") as file:
            file.write(f"{len(messages)}\n")


@dataclass(frozen=True)
class Outcome:
    seconds: float
    resends: int
    delivered: int


def ingest(handle: Pachka) -> int:
    """Send everything, resending refused tails; the number of resends."""
    resends = 0
    for start in range(0, MESSAGES, CHUNK):
        chunk = list(range(start, start + CHUNK))
        while chunk:
            accepted = handle.send_messages(chunk)
            chunk = chunk[accepted:]
            if chunk:
                resends += 1
                time.sleep(0.001)
    handle.stop()
    return resends


def produce(port: int, name: str) -> int:
    """In a spawned process: attach to the system by its admin port and ingest."""
    asys = ActorSystem("multiprocTCPBase", {"Admin Port": port}, logDefs=None,
                       transientUnique=True)
    return ingest(Pachka.connect(asys, name))


def watchdog(seconds: float, sid: int) -> threading.Timer:
    """After `seconds`: every thread's stack and the system's live pids, then exit 3."""
    def fire() -> None:
        print(f"HUNG after {seconds} s; pids of the system still alive: {session_pids(sid)}; "
              f"this process: {os.getpid()}", flush=True)
        faulthandler.dump_traceback(sys.stdout, all_threads=True)
        sys.stdout.flush()
        os._exit(3)
    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


def one_run(remote: bool, timeout: float, pause: float, owner_stop: bool) -> Outcome:
    asys, sid = start_system("multiprocTCPBase")
    assert sid is not None
    timer = watchdog(timeout, sid)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "counts")
        try:
            started = time.perf_counter()
            handle = Pachka.start(system=asys, sink=CountingSink(path, pause), name="probe",
                                  max_batch_size=BATCH)
            if remote:
                port = int(asys.capabilities["Admin Port"])
                with multiprocessing.get_context("spawn").Pool(1) as pool:
                    resends = pool.apply(produce, (port, "probe"))
                if owner_stop:
                    try:
                        handle.stop()  # the producer stopped it already
                    except Exception as exc:
                        print(f"owner's stop(): {exc!r}", flush=True)
                else:
                    handle.close()
            else:
                resends = ingest(handle)
            seconds = time.perf_counter() - started
        finally:
            asys.shutdown()
        timer.cancel()
        with open(path) as file:
            delivered = sum(int(line) for line in file)
    deadline = time.monotonic() + 5.0
    while session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if session_pids(sid):
        print(f"leftover after shutdown: {session_pids(sid)}", flush=True)
    return Outcome(seconds, resends, delivered)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--remote", action="store_true")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--owner-stop", action="store_true",
                        help="with --remote: the process that started the server stops it too")
    parser.add_argument("--sink-pause", type=float, default=0.0,
                        help="each batch sleeps up to this many seconds (a slow exporter)")
    args = parser.parse_args()
    for run in range(args.runs):
        outcome = one_run(args.remote, args.timeout, args.sink_pause, args.owner_stop)
        print(f"run {run}: {outcome.seconds:.2f} s, {outcome.resends} resends, "
              f"{outcome.delivered} delivered", flush=True)
        if outcome.delivered != MESSAGES:
            print(f"run {run}: LOST {MESSAGES - outcome.delivered}", flush=True)


if __name__ == "__main__":
    main()
