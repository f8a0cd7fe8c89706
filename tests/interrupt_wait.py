"""Run as a script by test_handle_faults: Ctrl-C while `send_message` waits for room.

`python interrupt_wait.py DIR`: fills a server whose sink is blocked (while
`DIR/block` exists), writes `DIR/waiting` and waits for room in
`send_message(..., wait=60)`. On KeyboardInterrupt it writes `DIR/stopping` and
calls `stop()`, then prints how long that took. Prints the admin's session id first.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from sinks import RecordingSink

from pachka_actors import Pachka
from pachka_actors.systems import shutdown_system, start_system

if __name__ == "__main__":
    directory = Path(sys.argv[1])
    # Ctrl-C must raise KeyboardInterrupt here even when the test runs as a background
    # job of a non-interactive shell, which starts its children with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    asys, sid = start_system("multiprocTCPBase")
    print(sid, flush=True)
    try:
        server = Pachka.start(system=asys, sink=RecordingSink(directory), max_batch_size=2,
                              critical_queue_size=2, max_batch_delay=None, credit_timeout=30,
                              buffer_size=1)
        for i in range(4):  # 2 in the blocked export, 2 queued: full
            server.send_message(i)
        server.flush()
        (directory / "waiting").touch()
        try:
            server.send_message(4, wait=60)  # ...until SIGINT
        except KeyboardInterrupt:
            (directory / "stopping").touch()
            began = time.monotonic()
            server.stop()
            print(f"{time.monotonic() - began:.2f}", flush=True)
    finally:
        shutdown_system(asys, sid)
