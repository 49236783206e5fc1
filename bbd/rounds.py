"""When the coordinator runs a Berkeley round, as a pure state machine: events in, actions
out (the style of bbd/election.py and bbd/catchup.py).

Triggers (the ``berkeley_interval`` timer, becoming coordinator, a follower's ``berkeley``
request after its client messages) arrive as ``request(why)``. Rounds never overlap: a
trigger while one runs is remembered and runs once it ``finished()``. Triggers closer than
``min_gap`` to the start of the last round are merged into one round at the end of the gap,
which bounds the sync-port traffic under heavy load. The machine does no I/O and reads time
only from the clock it is given; the service calls ``tick()`` at ``next_deadline()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


class Seconds(Protocol):
    def seconds(self) -> float: ...


@dataclass(frozen=True)
class StartRound:
    """Read every peer's clock and send the adjustments, then report ``finished()``."""

    why: str


class RoundSchedule:
    def __init__(self, clock: Seconds, *, min_gap: float) -> None:
        self._clock = clock
        self.min_gap = min_gap
        self.running = False
        self._again: str | None = None  # a trigger that came while a round ran
        self._later: tuple[float, str] | None = None  # a trigger merged to the gap's end
        self._last = -math.inf  # when the last round started

    def request(self, why: str) -> list[StartRound]:
        """A trigger: a round now, after the running one, or at the end of the gap."""
        if self.running:
            self._again = self._again or why
            return []
        at = self._last + self.min_gap
        if at > self._clock.seconds():
            if self._later is None:
                self._later = (at, why)
            return []
        self.running = True
        self._last = self._clock.seconds()
        return [StartRound(why)]

    def finished(self) -> list[StartRound]:
        """The round ended (well or not): a trigger it held back runs now (or after the gap)."""
        self.running = False
        again, self._again = self._again, None
        return self.request(again) if again is not None else []

    def tick(self) -> list[StartRound]:
        """The deadline came: the merged trigger, if its gap is over."""
        if self._later is None or self._later[0] > self._clock.seconds():
            return []
        _, why = self._later
        self._later = None
        return self.request(why)

    def drop_pending(self) -> None:
        """No longer coordinator: a merged trigger is not run later."""
        self._later = None
        self._again = None

    def next_deadline(self) -> float | None:
        return self._later[0] if self._later is not None else None
