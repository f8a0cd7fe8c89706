"""Issue 18.4: the loop a newcomer writes first runs through, as getting-started shows it."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from thespian.actors import ActorSystem

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
first_loop = importlib.import_module("first_loop")


def test_the_first_loop_runs_through_with_defaults(tcp_system: ActorSystem) -> None:
    """Three times `critical_queue_size` (10,000 by default) one by one, as fast as the
    loop goes: every message accepted, none refused."""
    result = first_loop.run(tcp_system, 30_000)
    assert (result["accepted"], result["refused"]) == (30_000, 0)
