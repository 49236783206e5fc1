"""Periodic work: a TimerService whose body logs its own exceptions and carries on
(one escaping exception would stop a LoopingCall for good)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import internet
from twisted.internet import defer
from twisted.logger import Logger

log = Logger()


def every(interval: float, fn: Callable[[], Any], what: str,
          clock: Any = None) -> internet.TimerService:
    def body() -> defer.Deferred:
        d = defer.maybeDeferred(fn)
        d.addErrback(lambda f: log.failure("periodic {what} failed", f, what=what))
        return d

    timer = internet.TimerService(interval, body)
    if clock is not None:
        timer.clock = clock
    return timer
