"""pytest fixtures for programs that use pachka_actors; loaded through the `pytest11` entry point.

`pachka_system`: an isolated Thespian actor system, simpleSystemBase unless the
test is parametrized indirectly with another base; shut down after the test,
and the test fails if any of its processes outlived that.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from thespian.actors import ActorSystem

from .systems import RECORDS, isolated_system, session_pids


@pytest.fixture
def pachka_system(request: pytest.FixtureRequest) -> Iterator[ActorSystem]:
    """An isolated actor system; `@pytest.mark.parametrize("pachka_system",
    ["multiprocTCPBase"], indirect=True)` picks the base."""
    base = getattr(request, "param", "simpleSystemBase")
    with isolated_system(base) as system:
        record = RECORDS[-1]
        yield system
    survivors = session_pids(record.sid) if record.sid is not None else []
    if record.killed or survivors:
        pytest.fail(f"processes of the {base} system outlived its shutdown: "
                    f"{record.killed or survivors}")
