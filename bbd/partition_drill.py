"""``python -m bbd.partition_drill``: how the board rides through partitions, in numbers.

Runs a three-server cluster with a network namespace per daemon (bbd/netns.py; needs
root) under a steady write load. Each round cuts one server off from everything else, then
heals, and measures: writes per second and latency before and during the cut, how long
the others take to stop counting on the cut-off server, and how long after the heal it
holds everything the others held at that moment. A last round splits the
cluster in two with a broker on each side, creates the same channel on both sides, heals,
and times the creations and the convergence.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bbd.client import Client, Unavailable
from bbd.localcluster import wait_for
from bbd.netns import NetCluster


class Load:
    """Clients posting back to back through the broker; each request's latency, by the
    time it was answered."""

    def __init__(self, frontend: str, clients: int) -> None:
        self.frontend = frontend
        self.done: list[tuple[float, float]] = []  # (answered at, latency)
        self.failed = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        setup = Client(frontend, timeout=1, retries=30)
        self.user = self.channel = f"drill-{uuid.uuid4().hex[:6]}"
        setup.request("login", {"user": self.user})
        setup.request("channel", {"channel": self.channel})
        setup.close()
        self.threads = [threading.Thread(target=self._run, args=(k,)) for k in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self, k: int) -> None:
        c = Client(self.frontend, timeout=1, retries=30)
        n = 0
        while not self.stop.is_set():
            n += 1
            t0 = time.monotonic()
            try:
                c.request("publish", {"user": self.user, "channel": self.channel,
                                      "message": f"{k}-{n}"})
            except Unavailable:
                with self.lock:
                    self.failed += 1
                continue
            t1 = time.monotonic()
            with self.lock:
                self.done.append((t1, t1 - t0))
        c.close()

    def window(self, start: float, end: float) -> tuple[float, float]:
        """Writes per second answered in [start, end), and their median latency (ms)."""
        with self.lock:
            lat = [dt for at, dt in self.done if start <= at < end]
        rate = len(lat) / (end - start)
        return rate, statistics.median(lat) * 1e3 if lat else float("nan")

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def converged(cluster: NetCluster) -> bool:
    statuses = [cluster.status(n) for n in cluster.names()]
    return all(s and s["ready"] and s["files_current"] for s in statuses) and \
        all(s["vector"] == statuses[0]["vector"] for s in statuses)


def covers(status: dict | None, vector: dict[str, int]) -> bool:
    return status is not None and all(status["vector"].get(o, 0) >= n
                                      for o, n in vector.items())


def counts_on(cluster: NetCluster, server: str, peer: str) -> bool:
    status = cluster.status(server)
    return status is None or bool(status["peers"].get(peer))


def isolate_round(cluster: NetCluster, load: Load, lone: str, seconds: float) -> dict:
    others = [n for n in cluster.names() if n != lone]
    t0 = time.monotonic()
    wait_for(lambda: time.monotonic() >= t0 + seconds, seconds + 1, "the load", 0.1)
    cut = time.monotonic()
    cluster.net.isolate(lone)
    wait_for(lambda: not any(counts_on(cluster, n, lone) for n in others), 30,
             f"the others to stop counting on {lone}")
    noticed = time.monotonic()
    wait_for(lambda: time.monotonic() >= cut + seconds, seconds + 1, "the load", 0.1)
    cluster.net.heal()
    healed = time.monotonic()
    # Writes go on, so "converged" here means: the cut-off server holds everything the
    # others held when the link came back.
    target = wait_for(lambda: cluster.status(others[0]), 5, "a status")["vector"]
    wait_for(lambda: covers(cluster.status(lone), target), 60, f"{lone} to catch up")
    done = time.monotonic()
    before, during = load.window(t0, cut), load.window(cut, healed)
    return {"before_rate": before[0], "before_p50": before[1], "during_rate": during[0],
            "during_p50": during[1], "noticed": noticed - cut, "caught_up": done - healed}


def split_round(root: Path) -> dict:
    cluster = NetCluster(root, brokers=2, broker_of={"servidor-3": "broker-2"})
    try:
        cluster.start()
        a, b = Client(cluster.frontend, timeout=3), Client(cluster.frontend_of("broker-2"),
                                                              timeout=3)
        cluster.net.partition(["reference", "proxy", "broker", "servidor-1", "servidor-2"],
                              ["broker-2", "servidor-3"])
        took: dict[str, float] = {}
        status: dict[str, str] = {}

        def create(side: str, client: Client) -> None:
            t0 = time.monotonic()
            status[side] = client.request("channel", {"channel": "sala"})["status"]
            took[side] = time.monotonic() - t0

        threads = [threading.Thread(target=create, args=x) for x in (("A", a), ("B", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        cluster.net.heal()
        healed = time.monotonic()
        wait_for(lambda: converged(cluster), 60, "convergence")
        listed = [c.request("channels")["channels"].count("sala") for c in (a, b)]
        a.close()
        b.close()
        return {"took": took, "status": status, "converged": time.monotonic() - healed,
                "listed": listed}
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bbd.partition_drill")
    p.add_argument("--rounds", type=int, default=3, help="cut-off rounds (one per server)")
    p.add_argument("--seconds", type=float, default=4.0, help="load before and during a cut")
    p.add_argument("--clients", type=int, default=4)
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bbd-drill-"))
    rounds = []
    try:
        began = time.monotonic()
        cluster = NetCluster(root / "cut").start()
        print(f"cluster with a namespace per daemon up in {time.monotonic() - began:.1f} s",
              flush=True)
        load = Load(cluster.frontend, args.clients)
        try:
            for r in range(args.rounds):
                lone = cluster.names()[r % len(cluster.names())]
                out = isolate_round(cluster, load, lone, args.seconds)
                rounds.append(out)
                print(f"round {r + 1}: {lone} cut off: writes {out['before_rate']:.0f}/s "
                      f"(p50 {out['before_p50']:.1f} ms) before, {out['during_rate']:.0f}/s "
                      f"(p50 {out['during_p50']:.1f} ms) during; others stopped counting "
                      f"on it after {out['noticed']:.2f} s; it caught up "
                      f"{out['caught_up']:.2f} s after the heal", flush=True)
        finally:
            load.close()
            cluster.stop()
        print(f"writes with no answer after every retry: {load.failed}")
        if rounds:
            print("medians: " + ", ".join(
                f"{k} {statistics.median(r[k] for r in rounds):.2f}"
                for k in ("before_rate", "during_rate", "noticed", "caught_up")))
        s = split_round(root / "split")
        print(f"split A|B, 'sala' created on both sides: {s['status']} in "
              f"{', '.join(f'{k} {v:.2f} s' for k, v in sorted(s['took'].items()))}; "
              f"converged {s['converged']:.2f} s after the heal; listed afterwards "
              f"{s['listed']} time(s) through each side's broker")
    except BaseException:
        print(f"daemon logs kept in {root}")
        raise
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
