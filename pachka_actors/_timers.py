"""The server's pending timers, pure: a heap of due times behind few Thespian wakeups.

Thespian wakeups cannot be cancelled, and simpleSystemBase checks every pending
one before each message. So the server keeps its timers here, cancels the ones
the core says are superseded (`CancelTimer`), and asks Thespian for a wakeup
only when a timer comes due before every wakeup already pending. A timer that
fires has therefore not been superseded: the core may treat a stale one as a
real anomaly. No Thespian and no clock here: the caller passes the times in.
"""

from __future__ import annotations

import heapq

from ._core_events import Timer


class Timers:
    """Timers by token (`Timer.token` is unique per server), due in monotonic seconds."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._live: dict[int, Timer] = {}
        self._wakeups: list[float] = []  # due times of the Thespian wakeups still pending

    def __len__(self) -> int:
        return len(self._live)

    def arm(self, timer: Timer, due: float, now: float) -> float | None:
        """Keep `timer` until `due`; the delay of a wakeup to request now, or None."""
        self._live[timer.token] = timer
        heapq.heappush(self._heap, (due, timer.token))
        return self._wakeup(now)

    def cancel(self, timer: Timer) -> None:
        self._live.pop(timer.token, None)

    def due(self, now: float) -> list[Timer]:
        """A wakeup came: the live timers due by `now`, in due order (each fires once)."""
        self._wakeups = [w for w in self._wakeups if w > now]
        fired = []
        while self._heap and self._heap[0][0] <= now:
            _, token = heapq.heappop(self._heap)
            timer = self._live.pop(token, None)
            if timer is not None:
                fired.append(timer)
        return fired

    def rearm(self, now: float) -> float | None:
        """After `due`: the delay of a wakeup to request for the next timer, or None."""
        return self._wakeup(now)

    def next_due(self) -> float | None:
        """When the earliest live timer is due (for waiting without Thespian), or None."""
        self._drop_cancelled()
        return self._heap[0][0] if self._heap else None

    def _wakeup(self, now: float) -> float | None:
        self._drop_cancelled()
        if not self._heap:
            return None
        due = self._heap[0][0]
        if self._wakeups and min(self._wakeups) <= due:
            return None  # a pending wakeup comes first and will re-arm
        self._wakeups.append(due)
        return max(0.0, due - now)

    def _drop_cancelled(self) -> None:
        while self._heap and self._heap[0][1] not in self._live:
            heapq.heappop(self._heap)
