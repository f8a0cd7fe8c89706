"""A REPL habit: a sink class defined in `__main__` after the actor system started.

Prints the error `Pachka.start` raised (type and text), then the admin's session id.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from pachka_actors import Pachka, Sink
from pachka_actors.systems import shutdown_system, start_system

asys, sid = start_system(sys.argv[1])


class LateSink(Sink):
    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        pass


began = time.monotonic()
try:
    Pachka.start(system=asys, sink=LateSink(), ask_timeout=30)
    print("started", flush=True)
except Exception as exc:
    print(f"{type(exc).__name__} after {time.monotonic() - began:.1f} s: {exc}", flush=True)
finally:
    shutdown_system(asys, sid)
    print(sid, flush=True)
