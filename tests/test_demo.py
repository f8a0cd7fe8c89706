"""The README's demo: every message arrives, in order, with or without the `demo` extra."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from sinks import wait_for
from support import process_gone

from pachka_actors import demo
from pachka_actors.demo import PlainProgress, TqdmProgress, progress, run


@pytest.mark.parametrize("tqdm_installed", [True, False])
def test_demo_delivers_everything_in_order(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch,
                                           tqdm_installed: bool) -> None:
    if tqdm_installed:
        pytest.importorskip("tqdm")
    else:
        monkeypatch.setitem(sys.modules, "tqdm", None)  # as if the extra were missing
    bar = progress(10)
    bar.close()
    assert isinstance(bar, TqdmProgress if tqdm_installed else PlainProgress)
    assert run(str(tmp_path / "events.sqlite3"), count=1200) == 0
    out, err = capsys.readouterr()
    assert "delivered:  1200 of 1200 messages" in out and "in order:   True" in out
    assert "processes:  0 left behind" in out
    assert ("1200/1200" if tqdm_installed else "delivered 1200 of 1200") in err


def demo_directories(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("pachka-demo-*"))


def test_demo_removes_its_temporary_database(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert run(count=300) == 0
    out, _ = capsys.readouterr()
    assert "delivered:  300 of 300 messages" in out and str(tmp_path) in out
    assert demo_directories(tmp_path) == []


def test_demo_removes_its_temporary_database_on_ctrl_c(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    made: list[Path] = []

    def interrupted(base: str) -> object:
        made.extend(d for d in demo_directories(tmp_path) if (d / "events.sqlite3").exists())
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "start_system", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(count=10)
    assert len(made) == 1  # the database was made before the interrupt, and is gone after it
    assert demo_directories(tmp_path) == []


def marked_pids(mark: str) -> list[int]:
    """Live processes whose environment holds `mark` (the demo and every process it forked)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and mark.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return [pid for pid in found if not process_gone(pid)]


def test_demo_ended_by_sigterm_leaves_no_process_and_no_file(tmp_path: Path) -> None:
    """`kill <pid>` (or a terminal closing) in the middle of the demo: its actor system is
    shut down and its temporary database removed, as on Ctrl-C."""
    mark = f"PACHKA_DEMO_TEST={os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "TMPDIR": str(tmp_path), mark.split("=")[0]: mark.split("=")[1]}
    demo_run = subprocess.Popen(
        [sys.executable, "-m", "pachka_actors", "demo", "--count", "1000000"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert demo_run.stdout is not None
        database = demo_run.stdout.readline().split()[1]

        def rows() -> int:
            with contextlib.suppress(sqlite3.Error):
                return demo.delivered(database)
            return 0

        wait_for(rows)  # the system runs and the sink writes
        demo_run.send_signal(signal.SIGTERM)
        assert demo_run.wait(timeout=60) == 128 + signal.SIGTERM
        try:
            wait_for(lambda: not marked_pids(mark), 10)
        except AssertionError:
            pytest.fail(f"processes left behind: {marked_pids(mark)}")
        assert demo_directories(tmp_path) == []
    finally:
        demo_run.kill()
        demo_run.wait()
        while pids := marked_pids(mark):  # what it left behind, and what they forked
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
