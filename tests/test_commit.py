"""bbd.commit.GroupCommit: one write per reactor turn, durability order and failures."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer, task

from bbd.commit import GroupCommit


class Disk:
    """Records each batch written; fails the next writes while ``broken``."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.broken = False

    def write(self, records: list[Any]) -> None:
        if self.broken:
            raise OSError(28, "No space left on device")
        self.batches.append(list(records))


def track(d: defer.Deferred) -> list:
    out: list = []
    d.addCallbacks(lambda r: out.append(("ok", r)), lambda f: out.append(("err", f)))
    return out


@pytest.fixture
def disk() -> Disk:
    return Disk()


@pytest.fixture
def clock() -> task.Clock:
    return task.Clock()


@pytest.fixture
def gc(disk: Disk, clock: task.Clock) -> GroupCommit:
    return GroupCommit(disk.write, clock)


def test_a_turns_records_are_written_together_at_its_end(
        gc: GroupCommit, disk: Disk, clock: task.Clock) -> None:
    assert gc.idle()
    waiting = [track(gc.submit(["a", "b"])), track(gc.submit(["c"]))]
    assert disk.batches == [] and all(w == [] for w in waiting) and not gc.idle()
    clock.advance(0)
    assert disk.batches == [["a", "b", "c"]]
    assert all(w == [("ok", None)] for w in waiting) and gc.idle()
    clock.advance(0)
    assert len(disk.batches) == 1  # no empty batch afterwards


def test_nobody_is_told_before_the_write_covering_it(
        gc: GroupCommit, disk: Disk, clock: task.Clock) -> None:
    log: list[str] = []

    def submit(i: int) -> None:
        gc.submit([i]).addCallback(lambda _: log.append(
            f"{i} durable after {sum(len(b) for b in disk.batches)} records"))

    submit(0)
    submit(1)
    clock.advance(0)
    submit(2)
    assert log == ["0 durable after 2 records", "1 durable after 2 records"]
    clock.advance(0)
    assert log[2:] == ["2 durable after 3 records"]


def test_records_submitted_by_a_waiter_go_in_the_next_turns_batch(
        gc: GroupCommit, disk: Disk, clock: task.Clock) -> None:
    later: list = []
    gc.submit(["a"]).addCallback(lambda _: later.append(track(gc.submit(["a2"]))))
    clock.advance(0)  # task.Clock also runs the call scheduled meanwhile; the reactor
    # would leave it for its next turn
    assert disk.batches == [["a"], ["a2"]] and later[0] == [("ok", None)] and gc.idle()


def test_a_failed_write_fails_its_whole_batch_and_later_batches_work(
        gc: GroupCommit, disk: Disk, clock: task.Clock) -> None:
    disk.broken = True
    doomed = [track(gc.submit(["a"])), track(gc.submit(["b"]))]
    clock.advance(0)
    for w in doomed:
        assert len(w) == 1 and w[0][0] == "err" and w[0][1].check(OSError)
    assert gc.idle() and disk.batches == []
    disk.broken = False  # the disk works again: writes go through
    later = track(gc.submit(["c"]))
    clock.advance(0)
    assert later == [("ok", None)] and disk.batches == [["c"]]


def test_after_runs_once_a_batch_s_waiters_were_all_told_even_when_it_failed(
        disk: Disk, clock: task.Clock) -> None:
    committer = GroupCommit(disk.write, clock)
    seen: list[list] = []
    outcomes = [track(committer.submit([i])) for i in range(2)]
    committer.after = lambda: seen.append([len(o) for o in outcomes])
    clock.advance(0)
    assert seen == [[1, 1]]  # both told before
    disk.broken = True
    outcomes = [track(committer.submit([9]))]
    clock.advance(0)
    assert seen == [[1, 1], [1]] and outcomes[0][0][0] == "err"
