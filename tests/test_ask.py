"""Replies matched to requests: a late reply never answers a later request (issue 11 point 4)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sinks import RecordingSink, delivered, wait_for
from support import start, touch
from thespian.actors import ActorSystem

from pachka_actors import ActorTimeout, Pachka
from pachka_actors._ask import ask
from pachka_actors.messages import ServerStatus, State, Stop, Stopped


def test_late_stopped_does_not_answer_a_later_start(tcp_system: ActorSystem,
                                                     tmp_path: Path) -> None:
    touch(tmp_path, "block")
    server = start(tcp_system, tmp_path, timers="wakeup", max_batch_size=1, linger=None)
    server.send_message("held")
    wait_for(lambda: server.status().state is State.EXPORTING)
    # On the system's own endpoint: the Stopped for this request comes late, to that endpoint.
    with pytest.raises(ActorTimeout):
        ask(tcp_system, server.address, Stop(), Stopped, 0.3)
    os.remove(tmp_path / "block")
    wait_for(lambda: delivered(tmp_path) == ["held"])
    other = Pachka.start(system=tcp_system, sink=RecordingSink(tmp_path), name="other",
                         linger=None)
    assert isinstance(other.status(), ServerStatus)  # not "unexpected reply: Stopped()"
    other.stop()


def test_late_reply_after_timed_out_stop(tcp_system: ActorSystem, tmp_path: Path) -> None:
    touch(tmp_path, "block")
    server = start(tcp_system, tmp_path, timers="wakeup", max_batch_size=1)
    server.send_message("held")
    wait_for(lambda: server.status().state is State.EXPORTING)
    with pytest.raises(ActorTimeout):
        server.stop(timeout=0.3)
    os.remove(tmp_path / "block")
    (tmp_path / "other").mkdir()
    other = Pachka.start(system=tcp_system, sink=RecordingSink(tmp_path / "other"), name="other")
    other.send_message("next")
    other.stop()
    assert delivered(tmp_path) == ["held"]
    assert delivered(tmp_path / "other") == ["next"]

