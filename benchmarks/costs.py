"""Per-message cost of `send_message` and `send_messages`, per base and linger setting.

`python -m benchmarks.costs`: the figures quoted in issue notes and docs; the
ratios against bare Thespian live in `python -m benchmarks`.
"""

from __future__ import annotations

import time
from typing import Any

from pachka_actors import Pachka, Sink
from pachka_actors.systems import isolated_system


class Null(Sink):
    def send_batch(self, messages: list[Any], server_value: Any) -> None:
        pass


def main(messages: int = 5000, lists: int = 20) -> None:
    for base in ("simpleSystemBase", "multiprocTCPBase"):
        with isolated_system(base) as asys:
            for linger in (None, 0.005):
                server = Pachka.start(system=asys, sink=Null(), max_batch_size=500,
                                      critical_queue_size=100_000, linger=linger)
                start = time.perf_counter()
                for i in range(messages):
                    server.send_message(i)
                server.flush()
                one = (time.perf_counter() - start) / messages
                start = time.perf_counter()
                for _ in range(lists):
                    server.send_messages(range(1000))
                bulk = (time.perf_counter() - start) / (lists * 1000)
                server.stop()
                print(f"{base:18} linger={linger!s:6} send_message {one * 1e6:7.1f} us/msg   "
                      f"send_messages(1000) {bulk * 1e6:5.2f} us/msg")


if __name__ == "__main__":
    main()
