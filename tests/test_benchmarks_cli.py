"""``make bench``'s calls of bbd.benchmarks parse: a run without arguments and each line of
the Makefile's recipe (a refused argument list failed ``make bench`` halfway)."""

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
