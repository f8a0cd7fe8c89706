"""A producer that ends without `stop()` (issue 11 points 2 and 13), run as a real process."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from sinks import RecordingSink, delivered, wait_for
from thespian.actors import ActorSystem

from pachka_actors import Pachka, _exit
from pachka_actors.messages import State
from pachka_actors.systems import RECORDS, SystemRecord, session_pids

TESTS = Path(__file__).parent


def run(tmp_path: Path, base: str, mode: str) -> tuple[subprocess.CompletedProcess[str], float,
                                                        int, set[int]]:
    began = time.monotonic()
    # Output to files: the admin keeps its starter's stdout open (thespian-notes).
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        result = subprocess.run([sys.executable, str(TESTS / "handle_exit.py"), str(tmp_path),
                                 base, mode], stdout=out, stderr=err, text=True, timeout=90,
                                env={**os.environ, "PYTHONPATH": f"{TESTS}:{TESTS.parent}"})
    took = time.monotonic() - began
    sid, *system = map(int, (tmp_path / "out").read_text().split())
    RECORDS.append(SystemRecord("of a child process", sid))  # checked at the end of the run
    return result, took, sid, set(system)


def kill(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.multiproc
@pytest.mark.parametrize("base", ["multiprocTCPBase", "multiprocQueueBase"])
def test_shutdown_without_stop_loses_nothing(tmp_path: Path, base: str) -> None:
    """Point 2: the handle ships its buffer before `shutdown()`; the server drains."""
    result, took, sid, _ = run(tmp_path, base, "shutdown")
    err = (tmp_path / "err").read_text()
    try:
        assert result.returncode == 0, err
        assert took < 30, f"exit took {took:.1f} s"
        assert "Traceback" not in err and "could not" not in err, err
        got = delivered(tmp_path)
        assert set(got) == set(range(3000))
        twice = [m for m, n in collections.Counter(got).items() if n > 1]
        assert len(twice) <= 100  # at most the batch in flight, killed and sent again
        if base == "multiprocTCPBase":  # Queue: processes left are the server's (issue 11.15)
            wait_for(lambda: not session_pids(sid), timeout=10)
    finally:
        kill(set(session_pids(sid)))


@pytest.mark.multiproc
@pytest.mark.parametrize("base", ["multiprocTCPBase", "multiprocQueueBase"])
def test_forgotten_shutdown_stops_the_server(tmp_path: Path, base: str) -> None:
    """Point 13: exit stops the server the handle started (Pachka's start_link); only
    Thespian's own admin and logger (and the session probe) stay, as documented. On
    multiprocQueueBase the exit hook once ran after multiprocessing's, which closes
    Thespian's queues: "OSError: handle is closed", a 10 s wait, the server left running."""
    result, took, sid, system = run(tmp_path, base, "forget")
    err = (tmp_path / "err").read_text()
    try:
        assert result.returncode == 0, err
        assert took < 30 and "Traceback" not in err, err
        assert delivered(tmp_path) == list(range(3000))  # stop() at exit: exactly once
        wait_for(lambda: set(session_pids(sid)) <= system, timeout=10)
    finally:
        kill(set(session_pids(sid)))


@pytest.mark.multiproc
@pytest.mark.parametrize("base", ["multiprocTCPBase", "multiprocQueueBase"])
def test_forgotten_shutdown_waits_for_the_server_after_lists_only(tmp_path: Path,
                                                                  base: str) -> None:
    """A handle that only sent lists, to a sink that always fails: the program ends once its
    server gave up, at `shutdown_timeout` (1 s). Before, the exit hook had no line to the
    server to wait on: the program ended at once, the server's "lost" after it."""
    result, _, sid, system = run(tmp_path, base, "forget-lists")
    err = (tmp_path / "err").read_text()
    try:
        assert result.returncode == 0, err
        waited = float((tmp_path / "exit-hook").read_text())
        assert 1.0 <= waited < 10.0, f"the exit hook waited {waited:.2f} s"
        wait_for(lambda: "3000 accepted messages lost" in (tmp_path / "err").read_text())
        wait_for(lambda: set(session_pids(sid)) <= system, timeout=10)
    finally:
        kill(set(session_pids(sid)))


@pytest.mark.multiproc
def test_sigterm_turned_into_an_exit_ships_the_handles_buffer(tmp_path: Path) -> None:
    """docs/shutdown.md: a producer killed by SIGTERM runs no exit hook and loses what its
    handle buffered, unless it turns SIGTERM into an exit; with that one line, the 3,000
    messages a handle lingering for a minute holds are all delivered, once."""
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        producer = subprocess.Popen(
            [sys.executable, str(TESTS / "handle_exit.py"), str(tmp_path), "multiprocTCPBase",
             "sigterm"], stdout=out, stderr=err,
            env={**os.environ, "PYTHONPATH": f"{TESTS}:{TESTS.parent}"})
    sid: int | None = None
    try:
        wait_for(lambda: (tmp_path / "sent").exists(), timeout=60)
        sid = int((tmp_path / "out").read_text().split()[0])
        RECORDS.append(SystemRecord("of a child process", sid))  # checked at the end of the run
        assert delivered(tmp_path) == []  # all in the handle's buffer
        producer.send_signal(signal.SIGTERM)
        assert producer.wait(timeout=60) == 128 + signal.SIGTERM
        err_text = (tmp_path / "err").read_text()
        assert "Traceback" not in err_text, err_text
        assert delivered(tmp_path) == list(range(3000))
    finally:
        producer.kill()
        producer.wait()
        if sid is not None:
            kill(set(session_pids(sid)))


def test_a_forked_child_leaves_its_parents_handle_alone(tcp_system: ActorSystem,
                                                         tmp_path: Path) -> None:
    """A program with a handle forks a child (not through Thespian) that ends normally:
    the child's exit neither stops the parent's server nor ships a copy of its buffer."""
    server = Pachka.start(system=tcp_system, sink=RecordingSink(tmp_path), linger=60.0,
                          max_batch_size=100, max_batch_delay=60.0)
    for message in ("a", "b", "c"):
        server.send_message(message)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the handle's threads run
        child = os.fork()
    if child == 0:  # what the child's interpreter exit would run, then out
        try:
            _exit.at_exit()
        finally:
            os._exit(0)
    try:
        wait_for(lambda: os.waitpid(child, os.WNOHANG)[0] == child, timeout=30)
    finally:
        kill({child})
    assert server.status().state is State.IDLE  # still running
    server.stop()
    assert delivered(tmp_path) == ["a", "b", "c"]
