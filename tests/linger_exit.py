"""Run as a script by test_handle: buffers messages, then exits without flush or stop."""

from __future__ import annotations

import atexit
import sys

from sinks import RecordingSink

from pachka_actors import Pachka
from pachka_actors.systems import shutdown_system, start_system

if __name__ == "__main__":
    asys, sid = start_system("multiprocTCPBase")
    atexit.register(shutdown_system, asys, sid)  # registered first, so it runs last
    print(sid, flush=True)
    server = Pachka.start(system=asys, sink=RecordingSink(sys.argv[1]), max_batch_size=10,
                          linger=3600)
    for i in range(3):
        server.send_message(i)
