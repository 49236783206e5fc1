"""``bbd chaos`` in miniature: a real cluster (a network namespace per daemon) under six
recording clients, every kind of fault once or more, then heal, converge and check. Fails on
any violation the checker finds, printing the verdict. Needs root, as in CI: elsewhere it
fails with the reason, it is never skipped. BBD_CHAOS_SEED picks another schedule."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bbd import netns
from bbd.chaos.run import run
from bbd.chaos.schedule import KINDS


def test_short_chaos_schedule_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    why = netns.unavailable()
    if why:
        pytest.fail(f"{why}. CI runs this test as root; it is never skipped.", pytrace=False)
    seed = int(os.environ.get("BBD_CHAOS_SEED", "2026"))
    lines: list[str] = []
    report = run(seed, 20, tmp_path, hold=(1.0, 1.5), gap=(0.5, 1.0), say=lines.append)
    verdict = "\n".join(lines)
    assert report["violations"] == [], verdict
    assert report["verdict"] == "PASS"
    # Every kind of fault happened and was undone; the clients got work done throughout.
    assert set(report["faults_by_kind"]) == set(KINDS), verdict
    assert all(f["ready"] is not None for f in report["faults"]), verdict
    counts = report["counts"]
    assert counts["acknowledged"] >= 300, verdict
    assert report["convergence_seconds"] is not None
    # The report, the record of every request and the picture are on disk.
    assert json.loads((tmp_path / "report.json").read_text())["seed"] == seed
    recorded = (tmp_path / "requests.jsonl").read_text().splitlines()
    assert len(recorded) == counts["operations"]
    assert (tmp_path / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
