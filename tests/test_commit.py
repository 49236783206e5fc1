"""bbd.commit.GroupCommit: batching, durability order and failures, with a hand-fired run."""

from __future__ import annotations

import threading

import pytest
import pytest_twisted
from twisted.internet import defer

from bbd.commit import GroupCommit, WriterThread


class FakeRun:
    """Stands in for deferToThread: records each write and lets the test finish it."""

    def __init__(self) -> None:
        self.calls: list[tuple[list, defer.Deferred]] = []
        self.written: list[list] = []

    def __call__(self, write, records):
        d: defer.Deferred = defer.Deferred()
        self.calls.append((records, d))
        return d

    def in_flight(self) -> int:
        return sum(1 for _, d in self.calls if not d.called)

    def finish(self, i: int = -1) -> None:
        records, d = self.calls[i]
        self.written.append(records)
        d.callback(None)

    def fail(self, i: int = -1) -> None:
        self.calls[i][1].errback(OSError("disk full"))


def track(d: defer.Deferred) -> list:
    out: list = []
    d.addCallbacks(lambda r: out.append(("ok", r)), lambda f: out.append(("err", f)))
    return out


@pytest.fixture
def run() -> FakeRun:
    return FakeRun()


@pytest.fixture
def gc(run: FakeRun) -> GroupCommit:
    return GroupCommit(lambda records: None, run=run)


def test_first_submit_writes_at_once(gc: GroupCommit, run: FakeRun) -> None:
    assert gc.idle()
    first = track(gc.submit(["a", "b"]))
    assert [r for r, _ in run.calls] == [["a", "b"]]
    assert first == [] and not gc.idle()
    run.finish()
    assert first == [("ok", None)] and gc.idle()


def test_submits_during_a_write_go_in_one_next_batch(gc: GroupCommit, run: FakeRun) -> None:
    first = track(gc.submit(["a"]))
    waiting = [track(gc.submit([x])) for x in ("b", "c")] + [track(gc.submit(["d", "e"]))]
    assert len(run.calls) == 1  # nothing more written while the first is in flight
    run.finish(0)
    assert first == [("ok", None)]
    assert all(w == [] for w in waiting)  # not durable until their own batch is written
    assert [r for r, _ in run.calls] == [["a"], ["b", "c", "d", "e"]]
    run.finish(1)
    assert all(w == [("ok", None)] for w in waiting) and gc.idle()
    assert len(run.calls) == 2  # no empty batch afterwards


def test_each_waiter_fires_after_the_write_covering_it(gc: GroupCommit, run: FakeRun) -> None:
    log: list[str] = []

    def submit(i: int) -> None:
        gc.submit([i]).addCallback(lambda _: log.append(
            f"{i} durable after {sum(len(b) for b in run.written)} records"))

    submit(0)
    submit(1)
    submit(2)
    run.finish()
    assert log == ["0 durable after 1 records"]
    submit(3)
    submit(4)
    run.finish()
    assert log[1:] == ["1 durable after 3 records", "2 durable after 3 records"]
    run.finish()
    assert log[3:] == ["3 durable after 5 records", "4 durable after 5 records"]
    assert [r for r, _ in run.calls] == [[0], [1, 2], [3, 4]]


def test_a_failed_write_errbacks_its_waiters_and_later_batches_work(
        gc: GroupCommit, run: FakeRun) -> None:
    first = track(gc.submit(["a"]))
    doomed = [track(gc.submit(["b"])), track(gc.submit(["c"]))]
    run.finish(0)
    queued = track(gc.submit(["d"]))  # submitted while the doomed batch is in flight
    run.fail(1)
    assert first == [("ok", None)]
    # Queued behind the failure, "d" fails with it (no gap in an origin's sequence).
    for w in [*doomed, queued]:
        assert len(w) == 1 and w[0][0] == "err" and w[0][1].check(OSError)
    assert len(run.calls) == 2 and gc.idle()
    later = track(gc.submit(["e"]))  # the disk works again: writes go through
    run.finish()
    assert later == [("ok", None)] and [r for r, _ in run.calls][-1] == ["e"]


def test_failure_when_nothing_is_queued_leaves_it_idle(gc: GroupCommit, run: FakeRun) -> None:
    doomed = track(gc.submit(["a"]))
    run.fail()
    assert doomed[0][0] == "err" and gc.idle() and len(run.calls) == 1


def test_default_runs_the_writer_in_a_thread_of_its_own() -> None:
    gc = GroupCommit(lambda r: None)
    assert isinstance(gc._run.__self__, WriterThread)


def test_write_function_receives_the_batch() -> None:
    written: list[list] = []

    def run_now(write, records):
        write(records)
        return defer.succeed(None)

    gc = GroupCommit(written.append, run=run_now)
    results = track(gc.submit([1, 2]))
    assert written == [[1, 2]] and results == [("ok", None)] and gc.idle()


def test_never_two_writes_in_flight(gc: GroupCommit, run: FakeRun) -> None:
    gc.submit(["x"])
    gc.submit(["a"]).addCallback(lambda _: gc.submit(["a2"]))
    gc.submit(["b"]).addCallback(lambda _: gc.submit(["b2"]))
    run.finish(0)
    run.finish(1)  # both waiters of batch ["a", "b"] submit again from their callbacks
    assert run.in_flight() == 1


@pytest_twisted.inlineCallbacks
def test_writer_thread_runs_calls_in_order_off_the_reactor_and_reports_failures() -> None:
    writer = WriterThread("test-writer")
    seen: list[tuple[int, str]] = []

    def work(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        if i == 3:
            raise OSError(28, "No space left on device")
        return i * 10

    ds = [writer.run(work, i) for i in range(6)]
    results = yield defer.DeferredList(ds, consumeErrors=True)
    assert [i for i, _ in seen] == list(range(6))
    assert {name for _, name in seen} == {"test-writer"}
    assert [r if ok else r.value.strerror for ok, r in results] == \
        [0, 10, 20, "No space left on device", 40, 50]
    # Stopping lets the call in hand finish; the next call starts a new thread.
    writer.stop()
    again = yield writer.run(work, 7)
    assert again == 70
    writer.stop()
