"""Logs a newcomer reads on every start: state changes, not repetitions or start-up races."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from bbd import launcher
from bbd.localcluster import Cluster, wait_for


def test_servers_started_before_the_reference_log_no_alarm(tmp_path: Path) -> None:
    c = Cluster(tmp_path, servers=2)
    try:
        for name in ["proxy", "broker", *c.names()]:
            c.spawn(name)
        logs = [c.data_dir(n) / "twistd.log" for n in c.names()]

        def started() -> bool:
            return all(p.exists() and "restored" in p.read_text() for p in logs)
        wait_for(started, 30, "the servers to start")
        # The scenario: the reference comes up after the servers' first tries (peer_timeout
        # is 1 s), as happens when everything starts at once on a loaded machine.
        time.sleep(1.5)
        c.spawn("reference")
        c.wait_up(["reference", "proxy", "broker", *c.names()])
        wait_for(lambda: all((c.status(n) or {}).get("coordinator") for n in c.names()), 30,
                 "a coordinator")
        # Several announce intervals (1 s) of the coordinator repeating itself.
        time.sleep(3)
        text = {n: (c.data_dir(n) / "twistd.log").read_text() for n in c.names()}
    finally:
        c.stop()
    for name, log in text.items():
        assert f"{name} registered with rank" in log, log
        assert "unreachable" not in log, log
        if "still waiting for the reference" in log:
            # Only a wait longer than the patience (5 s) is worth that line: possible on a
            # machine loaded enough to stall the reference's start.
            assert _seconds(log, "registered with rank") - _seconds(log, "restored") >= 4, log
        else:
            assert "reachable again" not in log, log
        assert "rank None" not in log, log
        assert "re-announced" not in log, log


def _seconds(log: str, text: str) -> float:
    """The time of the first log line holding ``text`` (twistd's ISO timestamp)."""
    line = next(x for x in log.splitlines() if text in x)
    return datetime.strptime(line.split(" ", 1)[0], "%Y-%m-%dT%H:%M:%S%z").timestamp()


def test_console_drops_the_empty_lines_procmon_adds_at_a_bot_exit() -> None:
    line = {"log_format": "[{tag}] {line}", "tag": "bot-1"}
    assert not launcher._console({**line, "line": ""})
    assert launcher._console({**line, "line": "done: 7 operations, 0 failed"})
    assert launcher._console({"log_format": "{line}", "line": ""})
