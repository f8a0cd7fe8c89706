"""The README's demo: every message arrives, in order, with or without the `demo` extra."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

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
