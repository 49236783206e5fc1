"""A server's physical clock, correctable without ever running backwards.

The clock reads an underlying time source (``time.time`` in production, a
``task.Clock().seconds`` in tests) and adds three things to it:

* ``skew``: a constant error, so demos and tests can start a server "wrong";
* ``drift``: a rate error, ``drift`` seconds gained per second of real time;
* the *applied* correction, built up from the adjustments Berkeley hands out.

An adjustment is never applied as a jump: programs that compare timestamps
(and people reading logs) assume time does not go backwards, and a forward
jump would open a hole in it. Instead the correction is *slewed* in: while
some correction is pending, the clock runs at most ``slew_rate`` faster (for a
positive one) or slower (for a negative one) than real time, so for the
default 0.5 it runs between 0.5x and 1.5x. A slowed clock still moves forward,
so readings are monotonic; as a last guard against the source itself stepping
back (an NTP step, say), ``now()`` never returns less than it returned before.

The correction is consumed lazily: whenever the clock is read, the real time
elapsed since the last read decides how much of the pending correction has
been applied meanwhile. Nothing needs a timer.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class PhysicalClock:
    def __init__(
        self,
        source: Callable[[], float] = time.time,
        skew: float = 0.0,
        drift: float = 0.0,
        slew_rate: float = 0.5,
    ) -> None:
        # Below 1 so that a negative correction slows the clock but never stops it.
        if not 0.0 < slew_rate < 1.0:
            raise ValueError("slew_rate must be in (0, 1)")
        self._source = source
        self.skew = skew
        self.drift = drift
        self.slew_rate = slew_rate
        self._t0 = source()
        self._last_real = self._t0  # source reading when the slew was last brought up to date
        self._applied = 0.0  # correction already absorbed
        self._pending = 0.0  # correction still to absorb
        self._last_reading = float("-inf")

    def _advance(self) -> float:
        """Absorb the share of the pending correction that real time allows; return source()."""
        real = self._source()
        elapsed = real - self._last_real
        if elapsed > 0:
            step = min(abs(self._pending), self.slew_rate * elapsed)
            step = step if self._pending > 0 else -step
            self._applied += step
            self._pending -= step
            self._last_real = real
        # A source stepping back leaves _last_real ahead: no slew until it catches up.
        return real

    def offset(self) -> float:
        """Current difference between this clock and its source (skew + drift + applied)."""
        real = self._advance()
        return self.skew + self.drift * (real - self._t0) + self._applied

    def now(self) -> float:
        """The clock's reading: never less than any earlier reading."""
        real = self._advance()
        reading = real + self.skew + self.drift * (real - self._t0) + self._applied
        # Only bites if the source itself steps back; slewing alone cannot.
        self._last_reading = max(self._last_reading, reading)
        return self._last_reading

    def seconds(self) -> float:
        """Alias of now(), so the clock can stand where a reactor's clock is expected."""
        return self.now()

    def adjust(self, delta: float) -> None:
        """Slew the clock by ``delta`` seconds from its current reading.

        This *replaces* any correction still pending rather than adding to it:
        a Berkeley adjustment is measured against the clock as it reads now, which
        already includes the part applied so far, so the unapplied rest of an
        older correction is part of the same error and must not be counted twice.
        """
        self._advance()
        self._pending = delta

    def pending(self) -> float:
        """Correction still to be slewed in (signed seconds)."""
        self._advance()
        return self._pending
