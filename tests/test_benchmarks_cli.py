"""``make bench``'s calls of bbd.benchmarks: each parses (a run without arguments, each
line of the Makefile's recipe: a refused argument list failed ``make bench`` halfway), and
the broker suite's measurement with a server stopped does not die of its first probe."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from bbd import benchmarks

MAKEFILE = Path(__file__).resolve().parent.parent / "Makefile"


def _bench_calls() -> list[list[str]]:
    recipe = MAKEFILE.read_text().split("\nbench:", 1)[1].split("\n\n", 1)[0]
    return [shlex.split(m) for m in re.findall(r"-m bbd\.benchmarks([^\n]*)", recipe)]


def test_no_arguments_run_the_default_suites() -> None:
    assert benchmarks.parse([]).suites == ["replication", "broker"]


def test_every_call_in_make_bench_parses() -> None:
    calls = _bench_calls()
    assert calls, "make bench runs bbd.benchmarks"
    for argv in calls:
        assert set(benchmarks.parse(argv).suites) <= set(benchmarks.SUITES)


def test_an_unknown_suite_is_refused() -> None:
    with pytest.raises(SystemExit):
        benchmarks.parse(["nope"])


class _Answering:
    """A client of a board that answers everything (the relay's stopped server aside)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __enter__(self) -> _Answering:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def request(self, service: str, data: dict, rid: str | None = None) -> dict:
        return {"status": "OK"}

    def close(self) -> None:
        pass


def test_a_run_told_not_to_probe_measures_where_the_probe_would_fail(monkeypatch) -> None:
    # Behind a round-robin relay with one server of three stopped, a single probe meets
    # it one time in three: the broker suite's hung measurement died of that.
    from bbd import bench

    monkeypatch.setattr(bench, "ask_once", lambda *a, **k: None)  # the probe's unlucky try
    monkeypatch.setattr(bench, "Client", _Answering)
    out = bench.run("tcp://127.0.0.1:1", 2, 0.05, probe=False)
    assert out["requests"] > 0 and out["failed"] == 0
    with pytest.raises(bench.NoBoard):
        bench.run("tcp://127.0.0.1:1", 2, 0.05)
