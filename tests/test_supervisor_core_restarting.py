"""The pure supervisor core while a failed restart is retried (issue 11 point 11).

As in Erlang's supervisor: the retry waits behind the calls that arrived during
the failed attempt; they see the child as `RESTARTING`, `delete_child` and
`restart_child` are refused with `ChildRestarting`, and `terminate_child` ends
the loop, so that the queued retry no longer starts the child.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from supervised_actors import Plain

from pachka_actors import ChildSpec
from pachka_actors._restart import RestartIntensity, Strategy
from pachka_actors._supervisor_core import (
    Boot,
    Call,
    ChildCreated,
    ChildExited,
    ChildInitFailed,
    ChildInitialized,
    CreateChild,
    Effect,
    Event,
    Exit,
    Reply,
    Status,
    SupervisorCore,
)
from pachka_actors.config import ChildType
from pachka_actors.errors import ChildRestarting, ChildRunning
from pachka_actors.messages import (
    RESTARTING,
    ChildTerminated,
    CountChildren,
    DeleteChild,
    RestartChild,
    StopSupervisor,
    SupervisorStopped,
    TerminateChild,
    WhichChildren,
)


class World:
    """Plays the actors: a created child gets an address; the test decides the rest."""

    def __init__(self, strategy: Strategy = Strategy.ONE_FOR_ONE) -> None:
        self.core = SupervisorCore(strategy, RestartIntensity(10, 5.0))
        self.effects: list[Effect] = []
        self.feed(Boot([ChildSpec("a", (Plain, "init")), ChildSpec("b", (Plain, "init"))],
                       "boot"))
        self.init_ok("a")
        self.init_ok("b")

    def feed(self, event: Event) -> None:
        for effect in self.core.handle(event, 0.0):
            self.effects.append(effect)
            if isinstance(effect, CreateChild):
                self.feed(ChildCreated(effect.spec.id, effect.incarnation,
                                       f"{effect.spec.id}#{effect.incarnation}", True))

    def incarnation(self, id: str) -> int:
        child = self.core.find(id)
        assert child is not None
        return child.incarnation

    def init_ok(self, id: str) -> None:
        self.feed(ChildInitialized(id, self.incarnation(id)))

    def init_fails(self, id: str) -> None:
        """The init reply is an error: the core stops the child, which then exits."""
        incarnation = self.incarnation(id)
        self.feed(ChildInitFailed(id, incarnation, "refused"))
        self.feed(ChildExited(id, incarnation))

    def crash(self, id: str) -> None:
        self.feed(ChildExited(id, self.incarnation(id)))

    def call(self, request: Any, requester: str) -> None:
        self.feed(Call(request, requester))

    def replies(self) -> dict[Any, Any]:
        return {e.to: e.value for e in self.effects if isinstance(e, Reply)}

    def starts(self) -> list[Hashable]:
        return [e.spec.id for e in self.effects if isinstance(e, CreateChild)]


def failing_restart(world: World) -> None:
    """Child "a" crashes; the restart's first attempt is under way."""
    world.crash("a")
    assert world.core.find("a").status is Status.STARTING  # type: ignore[union-attr]
    world.effects.clear()


def test_calls_during_a_failed_restart_see_it_restarting_and_terminate_ends_the_loop() -> None:
    world = World()
    failing_restart(world)
    for requester, request in [("which", WhichChildren()), ("delete", DeleteChild("a")),
                               ("restart", RestartChild("a")), ("count", CountChildren()),
                               ("terminate", TerminateChild("a")), ("after", WhichChildren())]:
        world.call(request, requester)
    assert world.replies() == {}  # served after the restart attempt
    world.init_fails("a")
    replies = world.replies()
    assert replies["which"] == [("a", RESTARTING, ChildType.WORKER),
                                ("b", "b#2", ChildType.WORKER)]
    assert isinstance(replies["delete"], ChildRestarting)
    assert isinstance(replies["restart"], ChildRestarting)
    assert str(replies["delete"]) == "child 'a' is restarting"
    assert replies["count"]["active"] == 1
    assert replies["terminate"] == ChildTerminated("a")
    assert replies["after"] == [("a", None, ChildType.WORKER), ("b", "b#2", ChildType.WORKER)]
    assert world.starts() == []  # the queued retry did not start "a" again
    assert world.core.idle
    assert world.core.find("a").status is Status.STOPPED  # type: ignore[union-attr]


def test_without_terminate_the_retry_starts_the_child_again() -> None:
    world = World()
    failing_restart(world)
    world.call(WhichChildren(), "which")
    world.init_fails("a")
    assert world.replies()["which"][0] == ("a", RESTARTING, ChildType.WORKER)
    assert world.starts() == ["a"]
    world.init_ok("a")
    assert world.core.idle and world.core.find("a").alive  # type: ignore[union-attr]


def test_one_for_all_terminate_during_the_loop_leaves_the_siblings_running() -> None:
    world = World(Strategy.ONE_FOR_ALL)
    world.crash("a")  # "b" is stopped first
    world.crash("b")
    world.init_ok("a")
    world.call(TerminateChild("b"), "terminate")
    world.effects.clear()
    world.init_fails("b")
    assert world.replies()["terminate"] == ChildTerminated("b")
    assert world.starts() == []
    assert world.core.idle  # no retry under way, which would stop "a" first
    assert [c.status for c in world.core.children] == [Status.RUNNING, Status.STOPPED]


def test_a_shutdown_during_the_loop_drops_the_retry() -> None:
    world = World()
    failing_restart(world)
    world.call(StopSupervisor(), "stop")
    world.init_fails("a")
    world.feed(ChildExited("b", world.incarnation("b")))  # it was asked to stop
    assert world.starts() == []
    assert world.replies()["stop"] == SupervisorStopped()
    assert [e for e in world.effects if isinstance(e, Exit)] == [Exit(gave_up=False)]


def test_a_call_queued_before_a_child_exit_sees_the_child_running() -> None:
    """Erlang's order: `restart_child` handled before the child's EXIT finds it running;
    the EXIT then restarts it (a crash is never lost to a call: found by Hypothesis)."""
    world = World()
    world.effects.clear()
    world.call(TerminateChild("b"), "terminate")  # a job: "b" is asked to stop
    world.call(RestartChild("a"), "restart")  # queued behind the job
    world.crash("a")  # "a"'s exit is queued behind the call
    world.crash("b")  # the job ends; the queue runs in order
    replies = world.replies()
    assert replies["terminate"] == ChildTerminated("b")
    assert isinstance(replies["restart"], ChildRunning) and "'a'" in str(replies["restart"])
    assert world.starts() == ["a"]  # restarted once, by its exit's decision
    world.init_ok("a")
    assert world.core.idle and world.core.find("a").alive  # type: ignore[union-attr]


def test_terminate_child_takes_the_exit_queued_behind_it() -> None:
    """`terminate_child` of a child whose exit is still queued: terminated, not restarted."""
    world = World()
    world.effects.clear()
    world.call(TerminateChild("b"), "first")
    world.call(TerminateChild("a"), "second")
    world.crash("a")
    world.crash("b")
    assert world.replies() == {"first": ChildTerminated("b"), "second": ChildTerminated("a")}
    assert world.starts() == []
    assert world.core.idle
