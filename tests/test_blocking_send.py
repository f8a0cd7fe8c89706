"""send_message(..., wait=...): wait for room at the server, then raise Overloaded."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from sinks import delivered, wait_for
from support import start, touch
from thespian.actors import ActorSystem

from pachka_actors import ConfigError, Overloaded
from pachka_actors.messages import State


@pytest.mark.parametrize("linger", [None, 0.005])
def test_a_blocking_send_waits_for_room_then_goes_in(tcp_system: ActorSystem, tmp_path: Path,
                                                     linger: float | None) -> None:
    touch(tmp_path, "block")
    server = start(tcp_system, tmp_path, max_batch_size=2, critical_queue_size=2,
                   linger=linger, buffer_size=1, timers="wakeup", max_batch_delay=None)
    for i in range(4):  # 2 in flight (blocked), 2 queued: full
        server.send_message(i)
    wait_for(lambda: server.status().state is State.EXPORTING)
    with pytest.raises(Overloaded) as refused:
        server.send_message(4)  # Pachka's behaviour: refused at once
    assert not refused.value.terminating
    began = time.monotonic()
    with pytest.raises(Overloaded):
        server.send_message(4, wait=0.3)  # nothing frees room in time
    assert time.monotonic() - began >= 0.3
    threading.Timer(0.3, os.remove, [tmp_path / "block"]).start()
    server.send_message(4, wait=30)  # the export finishes, the queue moves: room
    server.stop()
    assert delivered(tmp_path) == [0, 1, 2, 3, 4]


def test_blocking_send_refuses_a_bad_wait(tcp_system: ActorSystem, tmp_path: Path) -> None:
    server = start(tcp_system, tmp_path)
    with pytest.raises(ConfigError) as error:
        server.send_message(1, wait=-1)
    assert error.value.option == "wait"
    server.stop()
    assert delivered(tmp_path) == []
