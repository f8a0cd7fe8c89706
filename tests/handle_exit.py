"""Run as a script by test_handle_exit: a producer that ends without `stop()`.

`python handle_exit.py DIR BASE MODE`: sends 3,000 messages through a lingering
handle, then with MODE `shutdown` calls `ActorSystem.shutdown()` (no `stop()`),
with MODE `forget` just exits (no `stop()`, no `shutdown()`). Prints the OS
session id of the actor system, then the pids that belong to the system itself
(admin, logger, probe), before the server starts.
"""

from __future__ import annotations

import sys

from sinks import RecordingSink

from pachka_actors import Pachka
from pachka_actors.systems import session_pids, start_system

if __name__ == "__main__":
    directory, base, mode = sys.argv[1:4]
    asys, sid = start_system(base)
    assert sid is not None
    print(sid, *session_pids(sid), flush=True)
    server = Pachka.start(system=asys, sink=RecordingSink(directory), max_batch_size=100)
    for i in range(3000):
        server.send_message(i)
    if mode == "shutdown":
        asys.shutdown()
