"""Applies a schedule's faults to a ``NetCluster``, one at a time, and undoes each one:
every fault ends with the cluster whole again (links healed, processes running and ready)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bbd.chaos.schedule import Fault
from bbd.netns import NetCluster


@dataclass
class Applied:
    """A fault as it happened: seconds since the load began."""

    fault: Fault
    start: float
    undone: float | None = None  # links healed, process continued or started again
    ready: float | None = None  # every daemon it touched answers again
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.fault.to_dict(), "start": self.start, "undone": self.undone,
                "ready": self.ready, **({"error": self.error} if self.error else {})}


class Nemesis:
    def __init__(self, cluster: NetCluster, split: tuple[list[str], list[str]],
                 clock: Callable[[], float], ready_timeout: float = 120.0) -> None:
        self.cluster = cluster
        self.split = split
        self.clock = clock  # seconds since the load began
        self.ready_timeout = ready_timeout
        self.applied: list[Applied] = []
        self.stop = threading.Event()
        self.skews = [0.0] * len(cluster.names())
        cluster.layout.skews = self.skews  # restarts read the server's skew from here

    def apply(self, fault: Fault) -> Applied:
        a = Applied(fault, self.clock())
        self.applied.append(a)
        c, target = self.cluster, fault.target
        try:
            if fault.kind == "kill":
                c.kill(target)
                self._hold(fault)
                c.spawn(target)
            elif fault.kind == "pause":
                c.signal(target, signal.SIGSTOP)
                try:
                    self._hold(fault)
                finally:
                    c.signal(target, signal.SIGCONT)
            elif fault.kind in ("isolate", "split"):
                if fault.kind == "isolate":
                    c.net.isolate(target)
                else:
                    c.net.partition(*self.split)
                try:
                    self._hold(fault)
                finally:
                    c.net.heal()
            elif fault.kind.startswith("restart-"):
                c.kill(target)
                self._hold(fault)
                c.spawn(target)
            elif fault.kind == "clock-jump":
                # A clean stop, then a start with the physical clock off by the new skew.
                c.signal(target, signal.SIGTERM)
                c.procs[target].wait(30)
                self.skews[c.names().index(target)] = fault.skew or 0.0
                self._hold(fault)
                c.spawn(target)
            else:
                raise ValueError(f"unknown fault kind {fault.kind!r}")
            a.undone = self.clock()
            c.wait_up([target] if target != "split" else c.daemon_names(), self.ready_timeout)
            a.ready = self.clock()
        except Exception as e:  # recorded: a daemon that never came back is a finding
            a.error = f"{type(e).__name__}: {e}"
            self.restore()
        return a

    def _hold(self, fault: Fault) -> None:
        self.stop.wait(fault.hold)

    def restore(self) -> None:
        """Everything whole again, whatever state a failed fault left: links healed,
        paused processes continued, dead ones started."""
        c = self.cluster
        c.net.heal()
        for name in c.daemon_names():
            proc = c.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
            else:
                c.spawn(name)
        deadline = time.monotonic() + self.ready_timeout
        for name in c.daemon_names():
            try:
                c.wait_up([name], max(1.0, deadline - time.monotonic()))
            except AssertionError:
                pass  # the checker reports what does not converge
