"""Elixir's restart policy, pure: which children a supervisor restarts, and when it gives up.

No Thespian, no clock, no I/O: times are arguments, so the policy can be tested
exhaustively. The rules are those of Erlang's `supervisor` module, which
Elixir's `Supervisor` runs on.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace


class Strategy(enum.StrEnum):
    """Which siblings go down and come back with a child that is restarted."""

    ONE_FOR_ONE = "one_for_one"  # only the child
    ONE_FOR_ALL = "one_for_all"  # every child
    REST_FOR_ONE = "rest_for_one"  # the child and those started after it


class Restart(enum.StrEnum):
    """When a child that exited is restarted."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after an abnormal exit
    TEMPORARY = "temporary"  # never; its spec is deleted once it exits


def restarts(restart: Restart, abnormal: bool) -> bool:
    """Whether a child that exited is restarted (Erlang's `do_restart`)."""
    return restart is Restart.PERMANENT or (restart is Restart.TRANSIENT and abnormal)


@dataclass(frozen=True)
class Sibling:
    """What the policy needs to know of a child: its id, restart type and whether it runs."""

    id: Hashable
    restart: Restart
    running: bool


@dataclass(frozen=True)
class RestartPlan:
    """What restarting one child takes, in the order to do it.

    `stop`: running siblings, last started first. `start`: children, in start
    order, the failed one included. `delete`: temporary siblings, which are
    stopped and forgotten rather than restarted.
    """

    stop: tuple[Hashable, ...]
    start: tuple[Hashable, ...]
    delete: tuple[Hashable, ...]


def plan_restart(strategy: Strategy, children: Sequence[Sibling], failed: Hashable) -> RestartPlan:
    """The plan for restarting child `failed` of `children` (in start order) under `strategy`.

    As in Erlang, one_for_all and rest_for_one also start affected children that
    were not running (say, terminated by `terminate_child`).
    """
    ids = [child.id for child in children]
    if strategy is Strategy.ONE_FOR_ONE:
        affected: Sequence[Sibling] = []
    elif strategy is Strategy.ONE_FOR_ALL:
        affected = [child for child in children if child.id != failed]
    else:
        affected = children[ids.index(failed) + 1:]
    temporary = {child.id for child in affected if child.restart is Restart.TEMPORARY}
    affected_ids = {child.id for child in affected} | {failed}
    return RestartPlan(
        stop=tuple(child.id for child in reversed(affected) if child.running),
        start=tuple(i for i in ids if i in affected_ids and i not in temporary),
        delete=tuple(i for i in ids if i in temporary),
    )


@dataclass(frozen=True)
class RestartIntensity:
    """Elixir's `max_restarts` in `max_seconds`: the sliding window of recent restarts.

    `add(now)` records a restart; `exceeded` then says the supervisor must give
    up: more than `max_restarts` restarts happened within the last `max_seconds`
    (both ends included, as Erlang's `add_restart`).
    """

    max_restarts: int
    max_seconds: float
    times: tuple[float, ...] = ()  # of the restarts still in the window, oldest first

    def add(self, now: float) -> RestartIntensity:
        kept = tuple(t for t in self.times if now - t <= self.max_seconds)
        return replace(self, times=(*kept, now))

    @property
    def exceeded(self) -> bool:
        return len(self.times) > self.max_restarts
