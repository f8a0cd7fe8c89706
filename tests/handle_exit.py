"""Run as a script by test_handle_exit: a producer that ends without `stop()`.

`python handle_exit.py DIR BASE MODE`: sends 3,000 messages through a lingering
handle, then with MODE `shutdown` calls `ActorSystem.shutdown()` (no `stop()`),
with MODE `forget` just exits (no `stop()`, no `shutdown()`; `forget-lists`: the same
with one `send_messages` to a sink that always fails, `shutdown_timeout=1`, stamping in
`exit-hook` how long the exit hooks took), with MODE `sigterm`
keeps them in a handle that lingers for a minute and waits for the SIGTERM that
docs/shutdown.md's handler turns into an exit (its `sent` file says when). Prints the OS
session id of the actor system, then the pids that belong to the system itself
(admin, logger, probe), before the server starts.
"""

from __future__ import annotations

import atexit
import signal
import sys
import time
from pathlib import Path
from typing import Any

from sinks import RecordingSink

from pachka_actors import Pachka
from pachka_actors.systems import session_pids, start_system

if __name__ == "__main__":
    directory, base, mode = sys.argv[1:4]
    asys, sid = start_system(base)
    assert sid is not None
    print(sid, *session_pids(sid), flush=True)
    if mode == "sigterm":  # as docs/shutdown.md says
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    lingering: dict[str, Any] = {"linger": 60.0, "buffer_size": 5000} if mode == "sigterm" else {}
    ended: list[float] = []
    if mode == "forget-lists":
        (Path(directory) / "fail").touch()
        lingering["shutdown_timeout"] = 1.0
        atexit.register(lambda: (Path(directory) / "exit-hook").write_text(
            str(time.monotonic() - ended[0])))  # before the handle's hook: runs after it
    server = Pachka.start(system=asys, sink=RecordingSink(directory), max_batch_size=100,
                          **lingering)
    if mode == "forget-lists":
        assert server.send_messages(range(3000)) == 3000
        ended.append(time.monotonic())
        sys.exit(0)
    for i in range(3000):
        server.send_message(i)
    if mode == "shutdown":
        asys.shutdown()
    elif mode == "sigterm":
        (Path(directory) / "sent").touch()
        time.sleep(120)
