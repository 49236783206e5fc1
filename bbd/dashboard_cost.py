"""``python -m bbd.dashboard_cost``: what watching costs the board, side by side.

One three-server cluster; rounds alternate between "no dashboard" (the daemon not running)
and "dashboard watching" (the daemon running with a page open on its event stream, so it
polls, samples and pushes as it would for a person). Each round measures write throughput
and latency through the broker; the ratio of the medians is what to read.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bbd import bench
from bbd.localcluster import Cluster


class OpenPage:
    """A page's event stream, read in a thread (what a browser tab costs the daemon)."""

    def __init__(self, url: str) -> None:
        self.bytes = 0
        self._stop = False
        self._thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self._thread.start()

    def _read(self, url: str) -> None:
        with urllib.request.urlopen(url, timeout=10) as stream:
            while not self._stop:
                chunk = stream.read1(65536)
                if not chunk:
                    return
                self.bytes += len(chunk)

    def close(self) -> None:
        self._stop = True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bbd.dashboard_cost")
    p.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", type=int, default=16)
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bbd-dashcost-"))
    c = Cluster(root, servers=3)
    c.layout.dashboard = _free_port()
    results: dict[str, list[dict]] = {"no dashboard": [], "dashboard watching": []}
    streamed = 0
    try:
        c.start()
        for r in range(args.rounds):
            for label in results:
                page = None
                if label == "dashboard watching":
                    c.spawn("dashboard")
                    c.wait_up(["dashboard"])
                    page = OpenPage(f"http://127.0.0.1:{c.layout.dashboard}/events")
                    time.sleep(1.0)  # its first polls and the page's snapshot
                out = bench.run(c.frontend, args.clients, args.seconds)
                results[label].append(out)
                if page is not None:
                    page.close()
                    streamed += page.bytes
                    c.kill("dashboard")
                print(f"round {r + 1} {label:<20} {bench.line(out)}", flush=True)
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)
    print("\nmedians over rounds:")
    med = {}
    for label, runs in results.items():
        med[label] = {k: statistics.median(x[k] for x in runs)
                      for k in ("rate", "p50_ms", "p99_ms")}
        m = med[label]
        print(f"  {label:<20} clients={args.clients:<3} rate={m['rate']:8.1f}/s  "
              f"p50={m['p50_ms']:6.2f} ms  p99={m['p99_ms']:6.2f} ms")
    a, b = med["dashboard watching"], med["no dashboard"]
    print(f"  ratio watching/not watching: throughput {a['rate'] / b['rate']:.3f}x, "
          f"p50 latency {a['p50_ms'] / b['p50_ms']:.3f}x")
    print(f"  the page received {streamed / 1024:.0f} KiB of events in "
          f"{args.rounds * args.seconds:.0f} s of watching")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
