"""bbd.cpuprofile's summary of py-spy's raw stacks."""

from __future__ import annotations

from pathlib import Path

from bbd.cpuprofile import summarise


def test_shares_are_of_all_samples_inclusive_and_own(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "run (twisted/app.py:10);Logger.emit (twisted/logger/_logger.py:5) 3\n"
        "run (twisted/app.py:10);GroupCommit._commit (bbd/commit.py:40);"
        "Journal.append (bbd/store.py:30) 1\n")
    text = summarise(raw)
    assert text.startswith("4 samples holding the GIL")
    assert " 75.0%  log lines (Logger.emit)" in text
    assert " 25.0%  group commit (write, fsync and its waiters)" in text
    assert "100.0%  run (app)" in text
    own = text.split("-- own")[1]
    assert " 75.0%  Logger.emit (_logger)" in own and " 25.0%  Journal.append (store)" in own
