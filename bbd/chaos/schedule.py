"""A seeded, reproducible plan of faults. Pure: the same seed and duration always give the
same list, whatever the machine."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

# Every kind of fault the nemesis knows. A schedule starts with each kind once, in a seeded
# order, so that even a short run exercises all of them; later faults are drawn at random.
KINDS = ("kill", "pause", "isolate", "split", "restart-broker", "restart-proxy",
         "restart-reference", "clock-jump")
# Faults that cut links: while one lasts, two sides may each grant the same channel name.
PARTITIONS = ("isolate", "split")
MAX_SKEW = 30.0  # seconds: a clock jump restarts a server at most this far off


@dataclass(frozen=True)
class Fault:
    kind: str
    target: str  # a server, a relay, or "split" for the clean split
    at: float  # seconds after the load began
    duration: float  # how long the fault is held before it is undone
    skew: float | None = None  # clock-jump: the server's new --clock-skew

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def plan(seed: int, seconds: float, servers: list[str], *, warmup: float = 2.0,
         min_hold: float = 1.0, max_hold: float = 4.0, min_gap: float = 1.0,
         max_gap: float = 3.0) -> list[Fault]:
    """Faults, one at a time, starting after ``warmup`` and planned to end by ``seconds``
    (each is held for ``min_hold``..``max_hold`` s, then ``min_gap``..``max_gap`` s pass
    before the next)."""
    rng = random.Random(seed)
    first = list(KINDS)
    rng.shuffle(first)
    faults: list[Fault] = []
    t = warmup
    while True:
        kind = first.pop(0) if first else rng.choice(KINDS)
        hold = round(rng.uniform(min_hold, max_hold), 2)
        if t + hold > seconds:
            return faults
        skew = None
        if kind in ("kill", "pause", "isolate", "clock-jump"):
            target = rng.choice(servers)
        elif kind == "split":
            target = "split"
        else:
            target = kind.removeprefix("restart-")
        if kind == "clock-jump":
            skew = round(rng.uniform(-MAX_SKEW, MAX_SKEW), 3)
        faults.append(Fault(kind, target, round(t, 2), hold, skew))
        t += hold + rng.uniform(min_gap, max_gap)
