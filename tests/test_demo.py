"""The README's demo: every message arrives, in order, with or without the `demo` extra."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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
