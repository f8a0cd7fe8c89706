"""The server's timer heap: cancelled timers never fire, and few wakeups are requested."""

from __future__ import annotations

from pachka_actors._timers import Timers
from pachka_actors.core import Timer, TimerKind


def timer(token: int) -> Timer:
    return Timer(TimerKind.BATCH, token)


def test_one_wakeup_for_later_timers_and_cancelled_ones_never_fire() -> None:
    timers = Timers()
    assert timers.arm(timer(1), due=10.0, now=0.0) == 10.0
    assert timers.arm(timer(2), due=12.0, now=0.0) is None  # the wakeup at 10 comes first
    assert timers.arm(timer(3), due=5.0, now=1.0) == 4.0  # sooner: a wakeup of its own
    timers.cancel(timer(3))
    assert timers.due(5.0) == []
    assert timers.rearm(5.0) is None  # the wakeup at 10 is still pending
    assert timers.due(10.0) == [timer(1)]
    assert timers.rearm(10.0) == 2.0
    assert timers.next_due() == 12.0
    timers.cancel(timer(2))
    assert timers.next_due() is None and len(timers) == 0
    assert timers.due(12.0) == [] and timers.rearm(12.0) is None


def test_due_fires_in_order_and_once() -> None:
    timers = Timers()
    for token, due in [(1, 3.0), (2, 1.0), (3, 2.0)]:
        timers.arm(timer(token), due=due, now=0.0)
    assert timers.due(2.5) == [timer(2), timer(3)]
    assert timers.due(2.5) == []
    assert timers.due(3.0) == [timer(1)]
