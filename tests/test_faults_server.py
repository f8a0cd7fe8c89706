"""Faults around the server on a real multiprocTCPBase: exporters dying unreported, a
SIGKILLed server, a bare exit with a hung or failing sink, names reused at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sinks import DrainingRecordingSink, RecordingSink, calls, delivered, wait_for
from support import actor_system, fire, process_gone, start, touch, wait_state
from thespian.actors import ActorSystem

from pachka_actors import MessagesLost, Overloaded, Pachka, _ask
from pachka_actors._process import child_pids, stat
from pachka_actors.messages import State, TimerKind


def parent_of(pid: int) -> int:
    fields = stat(pid)
    assert fields is not None
    return int(fields[1])


def exporters_of(server_pid: int, count: int) -> list[int]:
    """The server's exporter processes, once there are `count` (the busy one and a spare)."""
    found: list[int] = wait_for(lambda: len(child_pids(server_pid)) >= count
                                and child_pids(server_pid))
    return found


def test_exporter_deaths_thespian_does_not_report_are_noticed(tcp_system: ActorSystem,
                                                               tmp_path: Path) -> None:
    """Killed together, the exporter and the spare are reaped at once and one exit is
    reported: without export_timeout the batch must still be retried as "exited"."""
    touch(tmp_path, "block")
    server = start(tcp_system, tmp_path, export_timeout=None)
    server.send_messages(range(5))
    [entered] = wait_for(lambda: calls(tmp_path, "enter"))
    server_pid = parent_of(entered["pid"])
    killed = exporters_of(server_pid, 2)
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    # Ended, not only signalled (tens of ms on a loaded machine): a retry given to a spare
    # still dying fails "exited" once more, and the retry timer is manual here.
    for pid in killed:
        wait_for(lambda: process_gone(pid))  # noqa: B023
    wait_state(server, State.RETRY_BACKOFF)
    assert calls(tmp_path, "retry_timeout")[0]["reason"] == "'exited'"
    os.remove(tmp_path / "block")
    fire(tcp_system, server, TimerKind.RETRY)
    server.stop(timeout=20)
    assert delivered(tmp_path) == list(range(5))
    wait_for(lambda: process_gone(server_pid), timeout=5)  # it exits once it said Stopped


def test_sigkilled_server_takes_its_exporters_along(tcp_system: ActorSystem,
                                                    tmp_path: Path) -> None:
    touch(tmp_path, "block")
    server = start(tcp_system, tmp_path)
    server.send_messages(range(5))
    [entered] = wait_for(lambda: calls(tmp_path, "enter"))
    server_pid = parent_of(entered["pid"])
    exporters = exporters_of(server_pid, 2)  # the blocked one and the spare
    os.kill(server_pid, signal.SIGKILL)
    for pid in exporters:
        wait_for(lambda: process_gone(pid), timeout=5)  # noqa: B023


def test_stop_without_timeout_ends_when_the_server_dies(tcp_system: ActorSystem,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`stop()` waits for ever by default; a server gone before it answered must end the
    wait (issue 8; tests/test_ask.py has the Stop dropped by an exiting server)."""
    monkeypatch.setattr(_ask, "PROBE_AFTER", 0.5)
    touch(tmp_path, "block")
    server = start(tcp_system, tmp_path, export_timeout=None)
    server.send_messages(range(5))
    [entered] = wait_for(lambda: calls(tmp_path, "enter"))
    server_pid = parent_of(entered["pid"])
    stopping = threading.Thread(target=server.stop, daemon=True)
    stopping.start()
    observer = Pachka.connect(tcp_system, server.address, linger=None)
    wait_for(lambda: observer.status().terminating)  # the Stop has arrived: it waits
    os.kill(server_pid, signal.SIGKILL)
    stopping.join(10)
    assert not stopping.is_alive(), "stop() still waits for a server that is gone"
    with pytest.raises(Overloaded):
        server.send_message("late")  # the handle knows it is gone


def test_stop_raises_what_the_server_lost_at_shutdown_timeout(tcp_system: ActorSystem,
                                                              tmp_path: Path) -> None:
    """`stop()` waits on a server whose sink always fails; another program ends the system:
    the server gives up at `shutdown_timeout`, and `stop()` says how many it lost. Before,
    it returned normally, the loss in the admin's log only."""
    touch(tmp_path, "fail")
    server = start(tcp_system, tmp_path, shutdown_timeout=0.5)
    assert server.send_messages(range(7)) == 7
    wait_state(server, State.RETRY_BACKOFF)  # its retry timer is manual: it waits there
    failures: list[BaseException] = []

    def stop() -> None:
        try:
            server.stop(timeout=30)
        except BaseException as exc:
            failures.append(exc)

    stopping = threading.Thread(target=stop)
    stopping.start()
    observer = Pachka.connect(tcp_system, server.address, linger=None)
    wait_for(lambda: observer.status().terminating)
    port = tcp_system._systemBase.adminAddr.addressDetails.sockname[1]
    subprocess.run([sys.executable, "-c", "from thespian.actors import ActorSystem; "
                    f"ActorSystem('multiprocTCPBase', {{'Admin Port': {port}}}, "
                    "logDefs=None).shutdown()"], check=True, timeout=60)
    stopping.join(30)
    assert not stopping.is_alive()
    [lost] = failures
    assert isinstance(lost, MessagesLost), lost
    assert (lost.count, lost.by) == (7, "the server"), lost
    assert "shutdown_timeout" in str(lost)
    assert server.stats().lost == 7
    with pytest.raises(MessagesLost):
        server.stop()  # said again: a program may check only its last call


@pytest.mark.parametrize("fault", ["hang", "fail"])
@pytest.mark.parametrize("sink", [RecordingSink, DrainingRecordingSink])
@pytest.mark.multiproc
def test_bare_exit_is_bounded_by_shutdown_timeout(tmp_path: Path, fault: str,
                                                  sink: type[RecordingSink]) -> None:
    """`ActorSystem.shutdown()` alone with a sink that hangs or always fails: exports keep
    export_timeout, and after shutdown_timeout the rest is drained (or logged lost) and
    the server process exits."""
    touch(tmp_path, fault)
    started = time.monotonic()
    with actor_system("multiprocTCPBase") as asys:
        server = Pachka.start(system=asys, sink=sink(tmp_path, retry_seconds=0.05),
                              max_batch_size=5, timers="manual", export_timeout=0.3,
                              shutdown_timeout=1.5)
        server.send_messages(range(12))
        [entered, *_] = wait_for(lambda: calls(tmp_path, "enter"))
        server_pid = entered["ppid"]  # its failed exporter may have exited already
        exit_requested = time.monotonic()
    wait_for(lambda: process_gone(server_pid), timeout=5)
    assert time.monotonic() - exit_requested < 5, time.monotonic() - started
    assert calls(tmp_path, "send_batch") == []
    if sink is DrainingRecordingSink:
        [drained] = calls(tmp_path, "drain_on_terminate")
        assert drained["batch"] == list(range(12))
    else:  # reported lost at ERROR with the count (tests/test_core_exit.py checks the log)
        assert len(calls(tmp_path, "enter")) >= 2  # retried within the bound
