"""A one-shot rendezvous: Deferreds handed out until the awaited thing settles."""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet import defer


@dataclass
class Waiters:
    """Everyone waiting for one event (an operation settled, a journal batch landed)."""

    waiters: list[defer.Deferred] = field(default_factory=list)

    def wait(self) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.waiters.append(d)
        return d

    def fire(self) -> None:
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            d.callback(None)
