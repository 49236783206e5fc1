"""When a board server may serve clients, as a pure state machine: events in, actions out.

A server serves clients only once it holds what its peers hold. It catches up (pulls from
every listed peer) at start, after it notices it was paused (SIGSTOP, a starved process: its
timers fire late), and after a cut-off from the reference (unreachable, or it had written
this server off, so the others may have gone on without it). While it catches up, client
requests wait in a bounded queue and the broker is told not to route to it; it keeps
heartbeating, so that a catch-up longer than the reference's expiry does not drop it from
the list.

Phases: ``STARTING`` (registering, nothing pulled yet) -> ``CATCHING_UP`` -> ``READY``, and
back to ``CATCHING_UP`` on a pause or a healed cut-off. The machine does no I/O and reads
time only from the clock it is given: the service feeds it events, carries out the actions
they return, and calls ``tick()`` at ``next_deadline()`` (and on every client request: after
a pause the reactor handles the queued requests before any timer).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol


class Seconds(Protocol):
    def seconds(self) -> float: ...


@dataclass(frozen=True)
class BeginCatchUp:
    """Pull from every listed peer, then report ``finished()``."""

    why: str


@dataclass(frozen=True)
class Paused:
    """The clock jumped ``gap`` seconds between two ticks: this process was stopped."""

    gap: float


@dataclass(frozen=True)
class ServingChanged:
    """Serve clients (tell the broker, answer the queued requests) or stop serving."""

    serving: bool


Action = BeginCatchUp | Paused | ServingChanged


class Phase(Enum):
    STARTING = "starting"
    CATCHING_UP = "catching-up"
    READY = "ready"


class CatchUp:
    def __init__(self, clock: Seconds, *, pause_threshold: float,
                 check_interval: float) -> None:
        """``pause_threshold``: a gap between ticks longer than this is a pause;
        ``check_interval``: how often ``next_deadline`` asks for a tick while ready."""
        if check_interval >= pause_threshold:
            raise ValueError("check_interval must be shorter than pause_threshold")
        self._clock = clock
        self.pause_threshold = pause_threshold
        self.check_interval = check_interval
        self.phase = Phase.STARTING
        # Cut off from the reference since the last catch-up began: a catch-up is owed once
        # it answers again. ``reference_lost``: its last request failed.
        self.cut_off = False
        self.reference_lost = False
        self._last_tick = clock.seconds()

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    @property
    def catching_up(self) -> bool:
        return self.phase is Phase.CATCHING_UP

    def heartbeats(self) -> bool:
        """Whether the periodic heartbeat runs: from the first catch-up on, also while
        catching up (at start, registration heartbeats by itself)."""
        return self.phase is not Phase.STARTING

    # -- catching up -----------------------------------------------------------------

    def begin(self) -> list[Action]:
        """A catch-up starts (at start, or for a ``BeginCatchUp``)."""
        was_ready = self.ready
        self.phase = Phase.CATCHING_UP
        self.cut_off = False
        return [ServingChanged(False)] if was_ready else []

    def finished(self) -> list[Action]:
        """Pulled from every peer (or given up on those that did not answer)."""
        self.phase = Phase.READY
        self._last_tick = self._clock.seconds()  # the catch-up's own length is no pause
        return [ServingChanged(True)]

    # -- pauses ----------------------------------------------------------------------

    def tick(self) -> list[Action]:
        """At ``next_deadline()`` and on every client request."""
        now = self._clock.seconds()
        gap, self._last_tick = now - self._last_tick, now
        if self.ready and gap > self.pause_threshold:
            return [Paused(gap), BeginCatchUp("a pause")]
        return []

    def next_deadline(self) -> float | None:
        """When to call ``tick()`` next (None: no tick needed, not serving)."""
        return self._last_tick + self.check_interval if self.ready else None

    # -- the reference ---------------------------------------------------------------

    def reference_failed(self) -> None:
        """A registration, heartbeat or list request to the reference failed."""
        self.reference_lost = self.cut_off = True

    def written_off(self) -> None:
        """The reference no longer knows this server (it expired it): register again."""
        self.cut_off = True

    def reference_answered(self) -> None:
        self.reference_lost = False

    def heartbeat_done(self, registered: bool) -> list[Action]:
        """After each periodic heartbeat: back from a cut-off (registered and the
        reference answering), the others may have gone on without us."""
        if self.cut_off and self.ready and registered and not self.reference_lost:
            self.cut_off = False
            return [BeginCatchUp("a cut-off from the reference")]
        return []
