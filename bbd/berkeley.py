"""Berkeley clock synchronisation: the arithmetic of one round.

The coordinator asks every server for its clock (the ``clock`` service) and
notes, on its *own* clock, when it sent the request (``t_send``) and when the
reply came back (``t_recv``). The server read its clock somewhere in between;
assuming the two legs of the round trip took equally long, that reading was
taken at ``t_send + rtt/2``, so by ``t_recv`` the server's clock shows about
``server_time + rtt/2``. The server's offset from the coordinator is therefore

    offset = server_time + rtt/2 - t_recv

and the error of that estimate is at most ``rtt/2``.

The coordinator counts itself with offset 0, then averages the offsets, leaving
out two kinds of reading:

* replies with a round trip above ``max_rtt``: their estimate is too loose to
  trust, and they get no adjustment this round either;
* outliers, whose offset lies more than ``outlier_threshold`` from the median
  (the median, unlike the mean, is not dragged by the faulty clock itself):
  one wildly wrong clock must not pull everybody else toward it. Outliers
  still receive an adjustment, toward the average of the others.

The result says how far each clock, the coordinator's included, must move to
reach that average: ``adjustment = average - offset``. Servers slew by it
(see ``bbd.physclock``) instead of jumping. A server that did not answer
(``None``) is skipped; it will be caught by a later round.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Reading:
    """One ``clock`` exchange, both ends timed on the coordinator's clock."""

    t_send: float
    server_time: float
    t_recv: float

    @property
    def rtt(self) -> float:
        return self.t_recv - self.t_send

    @property
    def offset(self) -> float:
        """Estimated server clock minus coordinator clock, at t_recv."""
        return self.server_time + self.rtt / 2 - self.t_recv


@dataclass(frozen=True)
class RoundResult:
    target: float  # the agreed time, as an offset from the coordinator's clock
    adjustments: dict[str, float]  # name -> seconds to slew by (coordinator included)
    offsets: dict[str, float]  # name -> estimated offset, for every usable reading
    averaged: tuple[str, ...]  # whose offsets made up the average
    outliers: tuple[str, ...] = ()  # adjusted, but left out of the average
    too_slow: tuple[str, ...] = ()  # rtt above the bound: ignored this round
    failed: tuple[str, ...] = ()  # no reply, or a reply timed impossibly


def compute_round(
    own_name: str,
    readings: Mapping[str, Reading | None],
    *,
    max_rtt: float = 0.2,
    outlier_threshold: float = 1.0,
) -> RoundResult:
    """Turn one round of ``clock`` readings into per-server adjustments.

    ``readings`` maps each polled server to its reading, or to None when the
    request failed. An entry for the coordinator itself is ignored: its offset
    is 0 by definition.
    """
    offsets: dict[str, float] = {own_name: 0.0}
    too_slow: list[str] = []
    failed: list[str] = []
    for name, reading in sorted(readings.items()):
        if name == own_name:
            continue
        if reading is None or reading.rtt < 0:
            failed.append(name)
        elif reading.rtt > max_rtt:
            too_slow.append(name)
        else:
            offsets[name] = reading.offset

    median = statistics.median(offsets.values())
    averaged = [n for n, o in offsets.items() if abs(o - median) <= outlier_threshold]
    if not averaged:
        # Only possible with an even count split in two far-apart camps: there is
        # no majority to trust, so fall back to the plain mean of everybody.
        averaged = list(offsets)
    outliers = [n for n in offsets if n not in averaged]
    target = statistics.fmean(offsets[n] for n in averaged)

    return RoundResult(
        target=target,
        adjustments={n: target - o for n, o in offsets.items()},
        offsets=offsets,
        averaged=tuple(averaged),
        outliers=tuple(outliers),
        too_slow=tuple(too_slow),
        failed=tuple(failed),
    )
