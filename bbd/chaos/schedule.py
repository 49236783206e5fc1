"""A seeded, reproducible plan of faults. Pure: the same seed always gives the same
sequence (kinds, targets, holds, calm gaps, skews), whatever the machine. How many of them
fit in a run's duration depends on how fast the daemons come back, so the plan is a
sequence, not a timetable: each fault starts a gap after the previous one is undone and
every daemon answers again."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

# Every kind of fault the nemesis knows. A plan starts with each kind once, in a seeded
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
    gap: float  # seconds of calm before it (after the previous fault is undone)
    hold: float  # seconds the fault lasts before it is undone
    skew: float | None = None  # clock-jump: the server's new --clock-skew

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def plan(seed: int, count: int, servers: list[str], *, hold: tuple[float, float] = (1.0, 4.0),
         gap: tuple[float, float] = (1.0, 3.0)) -> list[Fault]:
    """The first ``count`` faults of the seed's sequence (a longer plan of the same seed
    starts with the same faults)."""
    rng = random.Random(seed)
    first = list(KINDS)
    rng.shuffle(first)
    faults: list[Fault] = []
    while len(faults) < count:
        kind = first.pop(0) if first else rng.choice(KINDS)
        if kind in ("kill", "pause", "isolate", "clock-jump"):
            target = rng.choice(servers)
        elif kind == "split":
            target = "split"
        else:
            target = kind.removeprefix("restart-")
        skew = round(rng.uniform(-MAX_SKEW, MAX_SKEW), 3) if kind == "clock-jump" else None
        faults.append(Fault(kind, target, round(rng.uniform(*gap), 2),
                            round(rng.uniform(*hold), 2), skew))
    return faults
