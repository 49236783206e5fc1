"""The Berkeley round schedule (bbd/rounds.py) on a fake clock: rounds never overlap, and
triggers within the minimum gap are merged into one round at its end."""

from __future__ import annotations

from twisted.internet.task import Clock

from bbd.rounds import RoundSchedule, StartRound


def schedule(gap: float = 0.5) -> tuple[Clock, RoundSchedule]:
    clock = Clock()
    clock.advance(100)
    return clock, RoundSchedule(clock, min_gap=gap)


def test_first_trigger_starts_a_round_at_once() -> None:
    _, s = schedule()
    assert s.request("timer") == [StartRound("timer")]
    assert s.running
    assert s.next_deadline() is None


def test_a_trigger_while_a_round_runs_runs_once_after_it() -> None:
    clock, s = schedule()
    s.request("timer")
    assert s.request("elected") == []
    assert s.request("10 client messages") == []  # merged into the one held back
    clock.advance(1.0)  # past the gap
    assert s.finished() == [StartRound("elected")]
    assert s.finished() == []


def test_triggers_within_the_gap_merge_into_one_round_at_its_end() -> None:
    clock, s = schedule(0.5)
    s.request("timer")
    clock.advance(0.1)
    assert s.finished() == []
    assert s.request("a") == []
    assert s.request("b") == []
    assert s.next_deadline() == 100.5
    clock.advance(0.2)
    assert s.tick() == []  # too early: nothing yet
    clock.advance(0.2)
    assert s.tick() == [StartRound("a")]
    assert s.next_deadline() is None


def test_a_round_held_back_until_the_gap_ends_after_a_short_round() -> None:
    clock, s = schedule(0.5)
    s.request("timer")
    s.request("again")
    clock.advance(0.1)
    assert s.finished() == []  # the held trigger waits for the gap
    assert s.next_deadline() == 100.5
    clock.advance(0.4)
    assert s.tick() == [StartRound("again")]


def test_dropped_when_no_longer_coordinator() -> None:
    clock, s = schedule(0.5)
    s.request("timer")
    s.request("held")
    s.drop_pending()
    assert s.finished() == []
    s.request("later")
    s.drop_pending()
    assert s.next_deadline() is None
    clock.advance(1)
    assert s.tick() == []
    assert s.request("fresh") == [StartRound("fresh")]
