"""The pure restart policy: which children each strategy restarts, and the intensity window."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pachka_actors._restart import (
    Restart,
    RestartIntensity,
    Sibling,
    Strategy,
    plan_restart,
    restarts,
)


def test_restart_types_follow_elixir() -> None:
    table = {(r, abnormal): restarts(r, abnormal) for r in Restart for abnormal in (False, True)}
    assert table == {
        (Restart.PERMANENT, False): True, (Restart.PERMANENT, True): True,
        (Restart.TRANSIENT, False): False, (Restart.TRANSIENT, True): True,
        (Restart.TEMPORARY, False): False, (Restart.TEMPORARY, True): False,
    }


@st.composite
def siblings_and_failed(draw: st.DrawFn) -> tuple[list[Sibling], int]:
    """Children in start order; the failed one (not temporary, not running) by index."""
    n = draw(st.integers(1, 7))
    children = [Sibling(f"c{i}", draw(st.sampled_from(Restart)), draw(st.booleans()))
                for i in range(n)]
    failed = draw(st.integers(0, n - 1))
    children[failed] = Sibling(children[failed].id,
                               draw(st.sampled_from([Restart.PERMANENT, Restart.TRANSIENT])),
                               running=False)
    return children, failed


@given(siblings_and_failed(), st.sampled_from(Strategy))
def test_plan_restarts_exactly_the_affected_children(
        case: tuple[list[Sibling], int], strategy: Strategy) -> None:
    children, failed = case
    plan = plan_restart(strategy, children, children[failed].id)
    affected = {
        Strategy.ONE_FOR_ONE: [failed],
        Strategy.ONE_FOR_ALL: list(range(len(children))),
        Strategy.REST_FOR_ONE: list(range(failed, len(children))),
    }[strategy]
    others = [children[i] for i in affected if i != failed]
    # Running siblings go down last-started first; temporary ones are forgotten, the
    # rest (stopped ones too, as in Erlang) come back in start order with the failed child.
    assert plan.stop == tuple(c.id for c in reversed(others) if c.running)
    assert plan.delete == tuple(c.id for c in others if c.restart is Restart.TEMPORARY)
    assert plan.start == tuple(children[i].id for i in affected
                               if i == failed or children[i].restart is not Restart.TEMPORARY)


def test_plans_by_hand() -> None:
    a, b, c, d = (Sibling(i, Restart.PERMANENT, True) for i in "abcd")
    b = Sibling("b", Restart.PERMANENT, False)
    d = Sibling("d", Restart.TEMPORARY, True)
    children = [a, b, c, d]
    assert plan_restart(Strategy.ONE_FOR_ONE, children, "b").start == ("b",)
    all_plan = plan_restart(Strategy.ONE_FOR_ALL, children, "b")
    assert (all_plan.stop, all_plan.delete, all_plan.start) == (
        ("d", "c", "a"), ("d",), ("a", "b", "c"))
    rest_plan = plan_restart(Strategy.REST_FOR_ONE, children, "b")
    assert (rest_plan.stop, rest_plan.delete, rest_plan.start) == (("d", "c"), ("d",), ("b", "c"))


gaps = st.lists(st.integers(0, 40).map(lambda tenths: tenths / 10), min_size=1, max_size=30)


@given(st.integers(0, 5), st.integers(1, 6).map(float), gaps)
def test_intensity_is_exceeded_when_too_many_restarts_fall_in_the_window(
        max_restarts: int, max_seconds: float, gaps: list[float]) -> None:
    intensity = RestartIntensity(max_restarts, max_seconds)
    times: list[float] = []
    now = 0.0
    for gap in gaps:
        now += gap
        times.append(now)
        intensity = intensity.add(now)
        # More than max_restarts in the closed window [now - max_seconds, now] means
        # the (max_restarts+1)-th latest restart is no older than max_seconds.
        k = len(times) - 1
        assert intensity.exceeded == (
            k >= max_restarts and now - times[k - max_restarts] <= max_seconds)
        assert all(now - t <= max_seconds for t in intensity.times)
        assert intensity.times == tuple(t for t in times if now - t <= max_seconds)


@given(st.integers(1, 5), st.integers(1, 6).map(float), st.integers(1, 30))
def test_restarts_spaced_wider_than_the_window_never_exceed(
        max_restarts: int, max_seconds: float, count: int) -> None:
    """The sliding window forgets: a steady trickle below the rate never gives up."""
    spacing = max_seconds / max_restarts + 0.01
    intensity = RestartIntensity(max_restarts, max_seconds)
    for i in range(count):
        intensity = intensity.add(i * spacing)
        assert not intensity.exceeded


def test_zero_max_restarts_gives_up_at_the_first_restart() -> None:
    assert RestartIntensity(0, 5.0).add(0.0).exceeded


def test_window_ends_are_included_as_in_erlang() -> None:
    intensity = RestartIntensity(1, 5.0).add(0.0)
    assert intensity.add(5.0).exceeded  # 5 s apart: both still count
    assert not intensity.add(5.01).exceeded
