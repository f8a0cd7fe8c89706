"""The scale-out guide's example (examples/scale_out.py) on a loopback convention."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

# The example's sink must be importable by name in the admins, forked from this process.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
scale_out = importlib.import_module("scale_out")


@pytest.mark.multiproc
@pytest.mark.multihost
def test_the_pool_example_spreads_keeps_order_survives_a_member_and_loses_nothing(
        tmp_path: Path) -> None:
    report = scale_out.run(str(tmp_path), users=6, per_user=50)
    members = set(report["members"].values())
    left = report["left"]
    [stayed] = members - {left}
    assert set(report["before"]) <= members and left in report["before"]
    assert report["after"] == [stayed, stayed]  # restarted on the member that stayed
    events = [(e["user"], e["n"]) for batch in report["batches"] for e in batch["events"]]
    # Nothing accepted lost: the partitions drained before their member went away.
    assert set(events) == {(u, n) for u in range(6) for n in range(100)}
    # At least once: only a batch being exported when the member left can come twice.
    assert len(events) - len(set(events)) <= 100  # max_batch_size
    for user in range(6):  # each user's events in order (a repeat goes back, then on)
        first_seen = list(dict.fromkeys(n for u, n in events if u == user))
        assert first_seen == list(range(100))
    assert {batch["sid"] for batch in report["batches"]} == set(report["sids"].values())


def test_the_guide_shows_the_tested_example() -> None:
    root = Path(__file__).resolve().parents[1]
    guide = (root / "docs" / "scale-out.md").read_text()
    section = guide.split("## A supervised pool", 1)[1]
    shown = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert shown in (root / "examples" / "scale_out.py").read_text()
