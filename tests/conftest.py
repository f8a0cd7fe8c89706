"""Fixtures: real actor systems per test, Hypothesis profiles, and a check for leftovers.

`HYPOTHESIS_PROFILE=thorough` runs the state-machine models with 1000 examples
each (CI does); the default profile is quick enough for every save.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from hypothesis import settings
from support import actor_system
from thespian.actors import ActorSystem

from pachka_actors.systems import leftover_pids

settings.register_profile("default", max_examples=150, deadline=None)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

MULTIPROCESS = {"tcp_system", "queue_system"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts a multi-process system, so `-m "not multiproc"` is quick."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec is not None else ()
        bases = {value for value in params if isinstance(value, str)}
        if MULTIPROCESS & set(getattr(item, "fixturenames", ())) or bases & {
                "multiprocTCPBase", "multiprocQueueBase"}:
            item.add_marker(pytest.mark.multiproc)


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
        leftovers = leftover_pids()
        if not leftovers:
            return
        time.sleep(0.1)
    print(f"\nactor processes outlived the suite: {leftovers}")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
