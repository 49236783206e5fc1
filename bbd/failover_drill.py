"""``python -m bbd.failover_drill``: how fast a new coordinator is announced when the
coordinator dies (SIGKILL) or hangs (SIGSTOP), and how many announcements a restart causes.

Runs a three-server cluster on 127.0.0.1 (no root needed) and a subscriber on the proxy's
``servers`` topic. Each round waits until every server agrees on a coordinator, kills or
pauses it, and times the first announcement of another one as seen by the subscriber; then
brings it back (start again, or SIGCONT) and counts the coordinator changes announced until
the cluster agrees again. A last series restarts every server at once.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import tempfile
import time
from pathlib import Path

from bbd.client import Subscriber
from bbd.localcluster import Cluster, wait_for


def agreed(cluster: Cluster) -> str | None:
    """The coordinator every server is ready under and names, if they all agree."""
    statuses = [cluster.status(n) for n in cluster.names()]
    if not all(s and s["ready"] for s in statuses):
        return None
    names = {s.get("coordinator") for s in statuses}
    return names.pop() if len(names) == 1 and None not in names else None


class Announcements:
    def __init__(self, cluster: Cluster) -> None:
        self.sub = Subscriber(cluster.xpub, ["servers"])

    def drain(self) -> None:
        while self.sub.receive(0.0) is not None:
            pass

    def next_other(self, old: str, timeout: float) -> tuple[float | None, str | None]:
        """When (monotonic) an announcement of a coordinator other than ``old`` arrives,
        and its name; (None, None) if none does in time."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            got = self.sub.receive(left)
            name = got[1].get("data", {}).get("coordinator") if got else None
            if name not in (None, old):
                return time.monotonic(), name
        return None, None

    def changes_until(self, cluster: Cluster, timeout: float, current: str | None) -> int:
        """Announcements naming another coordinator than the one announced before (at
        first ``current``), until every server agrees, and a second more for late flips."""
        last, changes = current, 0
        deadline = time.monotonic() + timeout
        settled_at = None
        while time.monotonic() < deadline:
            got = self.sub.receive(0.1)
            if got:
                name = got[1].get("data", {}).get("coordinator")
                if name != last:
                    changes += 1
                    last = name
            if settled_at is None and agreed(cluster):
                settled_at = time.monotonic()
            if settled_at is not None and time.monotonic() > settled_at + 1.0:
                break
        return changes


def series(cluster: Cluster, ann: Announcements, fault: str, rounds: int) -> tuple[list, list]:
    took, changes = [], []
    for _ in range(rounds):
        old = wait_for(lambda: agreed(cluster), 60, "agreement on a coordinator", 0.1)
        ann.drain()
        t0 = time.monotonic()
        if fault == "kill":
            cluster.kill(old)
        else:
            cluster.signal(old, signal.SIGSTOP)
        at, new = ann.next_other(old, 10)
        took.append(None if at is None else at - t0)
        ann.drain()
        if fault == "kill":
            cluster.spawn(old)
        else:
            cluster.signal(old, signal.SIGCONT)
        changes.append(ann.changes_until(cluster, 60, new))
        wait_for(lambda: agreed(cluster), 60, "agreement after the return", 0.1)
        print(f"  {fault} {old}: new coordinator announced after "
              f"{'never' if at is None else f'{(at - t0) * 1e3:.0f} ms'}; "
              f"{changes[-1]} coordinator change(s) announced on its return", flush=True)
    return took, changes


def stats(values: list) -> str:
    got = [v for v in values if v is not None]
    missing = len(values) - len(got)
    if not got:
        return "none"
    ms = [v * 1e3 for v in got]
    return (f"min {min(ms):.0f} ms, median {statistics.median(ms):.0f} ms, max {max(ms):.0f} ms"
            + (f" ({missing} never)" if missing else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bbd.failover_drill")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--together", type=int, default=5, help="restarts of every server at once")
    p.add_argument("--keep", action="store_true", help="keep the daemons' logs")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bbd-failover-"))
    cluster = Cluster(root)
    try:
        cluster.start()
        ann = Announcements(cluster)
        kills, kill_changes = series(cluster, ann, "kill", args.rounds)
        pauses, pause_changes = series(cluster, ann, "pause", args.rounds)
        together = []
        for _ in range(args.together):
            wait_for(lambda: agreed(cluster), 60, "agreement", 0.1)
            for name in cluster.names():
                cluster.kill(name)
            ann.drain()
            for name in cluster.names():
                cluster.spawn(name)
            together.append(ann.changes_until(cluster, 60, None))
            print(f"  all restarted: {together[-1]} coordinator change(s) announced",
                  flush=True)
        print(f"SIGKILL of the coordinator, {args.rounds} times: {stats(kills)}")
        print(f"SIGSTOP of the coordinator, {args.rounds} times: {stats(pauses)}")
        print(f"coordinator changes announced when it returns: after a kill "
              f"{statistics.mean(kill_changes):.1f} (max {max(kill_changes)}), after a pause "
              f"{statistics.mean(pause_changes):.1f} (max {max(pause_changes)})")
        if together:
            print(f"coordinator changes announced when every server restarts at once: "
                  f"{statistics.mean(together):.1f} (max {max(together)})")
    except BaseException:
        print(f"daemon logs kept in {root}")
        raise
    finally:
        cluster.stop()
    if args.keep:
        print(f"daemon logs in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
