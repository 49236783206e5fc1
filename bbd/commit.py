"""Group commit: many writers, one fsync per batch, each writer told when it is durable.

While a batch is being written (in a thread, off the reactor), new records wait; when it
finishes they go out together. When it fails, the records waiting behind it fail too.
A reply that waits for ``submit``'s Deferred therefore never
acknowledges a write that a crash could lose.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer, threads
from twisted.python.failure import Failure


class GroupCommit:
    def __init__(self, write: Callable[[list[Any]], None],
                 run: Callable[..., defer.Deferred] = threads.deferToThread) -> None:
        self._write = write
        self._run = run
        self._pending: list[Any] = []
        self._waiters: list[defer.Deferred] = []
        self._busy = False

    def submit(self, records: list[Any]) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self._pending.extend(records)
        self._waiters.append(d)
        if not self._busy:
            self._flush()
        return d

    def _flush(self) -> None:
        records, waiters = self._pending, self._waiters
        self._pending, self._waiters = [], []
        self._busy = True
        self._run(self._write, records).addBoth(self._done, waiters)

    def _done(self, result: Any, waiters: list[defer.Deferred]) -> None:
        self._busy = False
        if isinstance(result, Failure):
            # Records queued behind a failed batch fail with it: written after it, they
            # would leave a gap in an origin's sequence where the failed ones were.
            waiters += self._waiters
            self._pending, self._waiters = [], []
        for d in waiters:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(None)
        # A waiter's callback may have submitted, and so started a batch, already.
        if self._pending and not self._busy:
            self._flush()

    def idle(self) -> bool:
        return not self._busy and not self._pending
