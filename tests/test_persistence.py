"""The server's persistence services (bbd/services/persistence.py) on a fake clock: the
stop order (children in reverse, one after the other), the data files' last flush after
the last writes, and the journal closed only once no batch is in flight."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import defer, task

from bbd.services.persistence import DataFilesService, InOrder, JournalService
from bbd.state import Board, Op


class Step(service.Service):
    """A child whose stop ends when the test says so."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.setName(name)
        self.log = log
        self.stopping: defer.Deferred | None = None

    def startService(self) -> None:
        super().startService()
        self.log.append(f"start {self.name}")

    def stopService(self) -> defer.Deferred:
        super().stopService()
        self.log.append(f"stop {self.name}")
        self.stopping = defer.Deferred()
        return self.stopping


def test_in_order_starts_in_order_and_stops_in_reverse_one_after_the_other() -> None:
    log: list[str] = []
    top = InOrder()
    steps = [Step(n, log) for n in ("journal", "files", "server")]
    for s in steps:
        s.setServiceParent(top)
    top.startService()
    assert log == ["start journal", "start files", "start server"]
    stopped = top.stopService()
    assert log[3:] == ["stop server"]  # the others wait for the server's stop to end
    steps[2].stopping.callback(None)
    assert log[3:] == ["stop server", "stop files"]
    steps[1].stopping.callback(None)
    assert log[3:] == ["stop server", "stop files", "stop journal"] and not stopped.called
    steps[0].stopping.callback(None)
    assert stopped.called


def _post(seq: int) -> Op:
    return Op("s1", seq, seq, "login", float(seq), {"user": f"u{seq}"})


class Committer:
    def __init__(self) -> None:
        self.busy = True

    def idle(self) -> bool:
        return not self.busy


def test_the_data_files_are_written_at_stop_after_the_last_write(tmp_path: Path) -> None:
    clock = task.Clock()
    board = Board("s1")
    committer = Committer()

    def writes_done() -> defer.Deferred:
        from bbd.services.persistence import until

        return until(clock, committer.idle)

    files = DataFilesService(tmp_path, board, lambda ops: (0, defer.succeed(None)),
                             writes_done, snapshot_interval=1.0, reload_interval=2.0,
                             clock=clock)
    for timer in list(files):  # the thread-based flush and reload are not under test here
        timer.disownServiceParent()
    files.startService()
    stopped = files.stopService()
    board.apply(_post(1))  # a journal batch still landing when the stop began
    clock.advance(0.05)
    assert not stopped.called
    committer.busy = False
    clock.advance(0.05)
    assert stopped.called
    users = json.loads((tmp_path / "usuarios.json").read_text())
    assert [u["user"] for u in users] == ["u1"]
    assert files.status() == {"files_current": True, "files_error": None}


def test_the_data_files_wait_while_the_server_catches_up(tmp_path: Path,
                                                        monkeypatch: Any) -> None:
    from twisted.internet import threads

    # The flush's thread, run in place so that the test sees what it wrote.
    monkeypatch.setattr(threads, "deferToThread",
                        lambda f, *a: defer.maybeDeferred(f, *a))
    catching_up = [True]
    board = Board("s1")
    files = DataFilesService(tmp_path, board, lambda ops: (0, defer.succeed(None)),
                             lambda: defer.succeed(None), snapshot_interval=1.0,
                             reload_interval=2.0, clock=task.Clock(),
                             hold=lambda: catching_up[0])
    board.apply(_post(1))
    assert files.flush_files() is None  # held: nothing rendered, nothing written
    assert not (tmp_path / "usuarios.json").exists()
    catching_up[0] = False
    assert files.flush_files() is not None  # over: brought up to date
    assert [u["user"] for u in json.loads((tmp_path / "usuarios.json").read_text())] == ["u1"]


class FakeJournal:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def open(self) -> None:
        self.log.append("open")

    def close(self) -> None:
        self.log.append("close")


def test_the_journal_is_replayed_before_it_opens_and_closed_once_idle(tmp_path: Path) -> None:
    clock = task.Clock()
    log: list[str] = []
    committer = Committer()
    journal: Any = FakeJournal(log)
    svc = JournalService("s1", tmp_path / "data", journal, committer,
                         lambda: log.append("restore"), clock)
    svc.startService()
    assert log == ["restore", "open"] and (tmp_path / "data").is_dir()
    stopped = svc.stopService()
    clock.advance(0.1)
    assert log == ["restore", "open"] and not stopped.called  # a batch in flight
    committer.busy = False
    clock.advance(0.01)
    assert log == ["restore", "open", "close"] and stopped.called
