from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from support import STARTED_SESSIONS, actor_system
from thespian.actors import ActorSystem

from pachka_actors.systems import session_pids


@pytest.fixture
def simple_system() -> Iterator[ActorSystem]:
    with actor_system("simpleSystemBase") as asys:
        yield asys


@pytest.fixture
def tcp_system() -> Iterator[ActorSystem]:
    with actor_system("multiprocTCPBase") as asys:
        yield asys


@pytest.fixture
def queue_system() -> Iterator[ActorSystem]:
    with actor_system("multiprocQueueBase") as asys:
        yield asys


@pytest.fixture(params=["simpleSystemBase", "multiprocTCPBase"])
def any_system(request: pytest.FixtureRequest) -> Iterator[ActorSystem]:
    with actor_system(request.param) as asys:
        yield asys


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any actor process outlived its system (they are killed per test too)."""
    deadline = time.monotonic() + 5
    leftovers: list[int] = []
    while time.monotonic() < deadline:
        leftovers = [pid for sid in STARTED_SESSIONS for pid in session_pids(sid)]
        if not leftovers:
            return
        time.sleep(0.1)
    print(f"\nactor processes outlived the suite: {leftovers}")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
