"""bbd.gcpause: the collector held off while millions of objects are made, then frozen."""

from __future__ import annotations

import gc

import pytest

from bbd import gcpause


@pytest.fixture(autouse=True)
def collector_on() -> None:
    gc.enable()
    yield
    gc.enable()


def test_holds_nest_and_the_collector_runs_again_after_the_last(
        monkeypatch: pytest.MonkeyPatch) -> None:
    frozen: list[bool] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(gc.isenabled()))
    gcpause.hold()
    with gcpause.held():
        assert not gc.isenabled()
    assert not gc.isenabled() and frozen == []  # the outer hold is still on
    gcpause.release(freeze=True)
    assert gc.isenabled() and frozen == [False]  # frozen before it runs again
    gcpause.release()  # one release too many changes nothing
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with gcpause.held():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_a_failure_inside_still_releases() -> None:
    with pytest.raises(RuntimeError), gcpause.held():
        raise RuntimeError("boom")
    assert gc.isenabled()
