"""The docs' ordering example (examples/supervised_pachka.py) on a real TCP system.

Sink system, Pachka server, producer: started in that order, stopped in reverse,
and not one accepted message lost.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from pathlib import Path

from sinks import RecordingSink, calls, wait_for
from support import process_gone
from thespian.actors import ActorSystem

from pachka_actors import Pachka, Supervisor
from pachka_actors.messages import RESTARTING

# The example's actors must be importable by name in the actor processes, which are
# forked from this one once it has imported the example.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
supervised_pachka = importlib.import_module("supervised_pachka")


def test_the_ordering_example_starts_in_order_stops_in_reverse_and_loses_nothing(
        tcp_system: ActorSystem, tmp_path: Path) -> None:
    entries = supervised_pachka.run(tcp_system, str(tmp_path), events=500)
    events = [e["event"] for e in entries if e["event"] != "stored"]
    # The repo opens before the producer starts and closes after it stopped; the sink
    # never found it closed, so Pachka drained into it before it closed.
    assert events == ["repo opened", "tracker started", "tracker busy", "tracker stopped",
                      "repo closed"]
    stored = [m for e in entries if e["event"] == "stored" for m in e["batch"]]
    stopped_at = [e["event"] for e in entries].index("tracker stopped")
    stopped = entries[stopped_at]
    # Zero loss: every event the producer had accepted is stored, once, in order (the
    # list in flight when it stopped may have been accepted too).
    assert stored == list(range(len(stored)))
    assert stopped["accepted"] <= len(stored) <= stopped["accepted"] + stopped["in_flight"]
    assert stopped["accepted"] >= 500
    # The producer keeps producing until it is stopped, so Pachka always has a drain to do.
    assert any(e["event"] == "stored" for e in entries[stopped_at:])


def test_the_guide_shows_the_tested_example() -> None:
    root = Path(__file__).resolve().parents[1]
    guide = (root / "docs" / "supervision.md").read_text()
    shown = guide.split("```python\n", 1)[1].split("```", 1)[0]
    assert shown in (root / "examples" / "supervised_pachka.py").read_text()


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_killed_server_under_a_permanent_supervisor_leaves_no_exporter(
        tcp_system: ActorSystem, tmp_path: Path) -> None:
    """The supervisor restarts a SIGKILLed server; the exporter the old one had in flight
    (blocked in the sink) must not live on as an orphan."""
    (tmp_path / "block").touch()
    sup = Supervisor.start([Pachka.child_spec(id="pachka", sink=RecordingSink(tmp_path),
                                              max_batch_size=1)],
                           system=tcp_system, ask_timeout=20)
    old = sup.which_children()[0][1]
    Pachka.connect(tcp_system, old, linger=None).send_messages(["m"])
    exporter = wait_for(lambda: calls(tmp_path, "enter"))[0]["pid"]
    os.kill(_parent(exporter), signal.SIGKILL)
    wait_for(lambda: sup.which_children()[0][1] not in (None, RESTARTING, old))
    try:
        wait_for(lambda: process_gone(exporter), timeout=5)
    finally:
        (tmp_path / "block").unlink()
        sup.stop()
