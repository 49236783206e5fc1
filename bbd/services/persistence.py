"""A board server's persistence, as two services of its own: the journal (replayed at start,
closed last at stop) and the four JSON data files (flushed and reloaded on their timers, and
once more at stop). ``InOrder`` composes the server's services so that these stop last.

They talk to the write path through narrow, declared interfaces: the journal service gets a
``restore`` callable and the group commit it waits for; the data files service gets the board
to render, a ``take`` for entries others changed on disk, and ``writes_done`` for the stop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from bbd.state import Board, Op, ops_from_files
from bbd.store import DataFiles, Journal

log = Logger()


class InOrder(service.MultiService):
    """Children start in order (as a MultiService does) and stop in reverse, one after the
    other: each stop waits for the later child's to finish (writes in flight finish
    replicating before the links close; the data files and the journal come last)."""

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        service.Service.stopService(self)
        for child in reversed(list(self)):
            try:
                yield defer.maybeDeferred(child.stopService)
            except Exception:
                log.failure("stopping {child} failed", child=child.name or repr(child))


class Committer(Protocol):
    def idle(self) -> bool: ...


def until(clock: Any, done: Callable[[], bool], step: float = 0.01) -> defer.Deferred:
    """Fires once ``done()`` holds, checked every ``step`` seconds on ``clock``."""
    if done():
        return defer.succeed(None)
    return task.deferLater(clock, step, lambda: None).addCallback(
        lambda _: until(clock, done, step))


class JournalService(service.Service):
    """Replays the journal into the board at start, then opens it for appends; at stop,
    waits for the batches in flight and closes it (the last thing the server does)."""

    def __init__(self, name: str, data_dir: Path, journal: Journal, committer: Committer,
                 restore: Callable[[], None], clock: Any) -> None:
        self.setName("journal")
        self.server_name = name
        self.data_dir = data_dir
        self.journal = journal
        self.committer = committer
        self.restore = restore
        self.clock = clock

    def startService(self) -> None:
        super().startService()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.restore()
        self.journal.open()

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        yield until(self.clock, self.committer.idle)
        self.journal.close()
        log.info("{name} stopped", name=self.server_name)


class DataFilesService(service.MultiService):
    """The four JSON files: brought up to date every ``snapshot_interval`` (in a thread),
    entries others changed on disk merged every ``reload_interval``, and written once more
    at stop, after the last writes."""

    def __init__(self, data_dir: Path, board: Board,
                 take: Callable[[Iterable[Op]], tuple[int, defer.Deferred]],
                 writes_done: Callable[[], defer.Deferred], *, snapshot_interval: float,
                 reload_interval: float, clock: Any,
                 hold: Callable[[], bool] = lambda: False) -> None:
        from bbd.services.timers import every

        super().__init__()
        self.setName("data files")
        self.files = DataFiles(data_dir)
        self.board = board
        self.take = take
        self.writes_done = writes_done
        self.files_at = -1  # board.applied when the data files last reached the disk
        self.files_error: str | None = None
        self._flushing: defer.Deferred | None = None
        # True while the server catches up: pages arrive in (origin, seq) order, not in the
        # files' total order, so each flush would rewrite most of a file from an early
        # place (a new server taking a million posts rewrote 160 MB a second and starved
        # its reactor). The files are brought up to date once it is over; a catching-up
        # server acknowledges no write, so none is missing from them meanwhile.
        self.hold = hold
        every(snapshot_interval, self.flush_files, "data files flush", clock=clock) \
            .setServiceParent(self)
        every(reload_interval, self.reload, "JSON reload", clock=clock).setServiceParent(self)

    def status(self) -> dict[str, Any]:
        return {"files_current": self.files_at == self.board.applied
                and not self.files.pending(), "files_error": self.files_error}

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        yield super().stopService()  # the timers
        if self._flushing is not None:
            yield self._flushing
        yield self.writes_done()
        try:
            self.flush_files_now()
        except OSError as e:
            log.error("data files not written at stop ({why}); the journal has everything",
                      why=str(e))

    def flush_files_now(self) -> None:
        """Bring the data files up to date here and now (at stop, on the reactor)."""
        if self.board.applied == self.files_at and not self.files.pending():
            return
        at = self.board.applied
        self.files.apply(self.files.take(self.board))
        self.files_at = at

    def flush_files(self) -> defer.Deferred | None:
        """Bring the four JSON files up to date if anything changed: the changed entries
        are taken here, rendered and written (in place, behind an atomic rename) in a
        thread. A failed write (full disk) is logged once and tried again next time."""
        at = self.board.applied
        if (at == self.files_at and not self.files.pending()) or self._flushing is not None \
                or self.hold():
            return None
        from twisted.internet import threads

        batch = self.files.take(self.board)  # O(changed entries)
        d = self._flushing = threads.deferToThread(self.files.apply, batch)
        d.addCallbacks(self._files_written, self._files_failed, callbackArgs=(at,))
        return d.addBoth(self._flush_done)

    def _flush_done(self, _: Any) -> None:
        self._flushing = None

    def _files_written(self, _: Any, at: int) -> None:
        self.files_at = at
        if self.files_error is not None:
            log.info("data files written again")
            self.files_error = None

    def _files_failed(self, failure: Any) -> None:
        failure.trap(OSError)
        why = str(failure.value)
        if self.files_error != why:
            log.error("data files not written: {why}; the journal holds every write, and "
                      "the files are tried again each second", why=why)
        self.files_error = why

    @defer.inlineCallbacks
    def reload(self) -> Any:
        """Merge entries of data files changed on disk by someone else, by id."""
        from twisted.internet import threads

        changed = yield threads.deferToThread(self.files.changed_by_others)
        if not changed:
            return
        n, durable = self.take(ops_from_files(changed, self.board.get))
        yield durable
        log.info("reload: {files} changed on disk; merged {n} new entries",
                 files=", ".join(sorted(changed)), n=n)
