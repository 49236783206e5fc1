"""bbd.pathcost: both roles really run the write path (every request answered, every
operation held) and give a CPU time."""

from __future__ import annotations

from pathlib import Path

import pytest

from bbd import pathcost


@pytest.mark.parametrize("batch", [1, 4])
def test_the_origin_answers_every_publish_and_journals_it(tmp_path: Path, batch: int) -> None:
    took = pathcost.origin(tmp_path, 12, batch)
    assert took > 0
    lines = (tmp_path / "journal.log").read_bytes().count(b"\n")
    assert lines == 12 + 2  # the login, the channel, then every post


def test_the_replica_holds_every_operation_it_is_sent(tmp_path: Path) -> None:
    assert pathcost.replica(tmp_path, 12, 3) > 0
    assert (tmp_path / "journal.log").read_bytes().count(b"\n") == 12 + 2


def test_the_table_has_a_row_per_batch(capsys: pytest.CaptureFixture[str]) -> None:
    pathcost.main(["--writes", "8", "--batches", "1", "4"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [row.split("|")[1].strip() for row in rows[1:]] == ["1", "4"]
