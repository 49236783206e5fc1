"""``python -m bbd.dashboard_cost``: what watching costs the board, side by side.

One three-server cluster and one dashboard with a page open on its event stream (so it
polls, samples and pushes as it would for a person). Rounds alternate, in the order
A B B A, between "not watching" (the dashboard stopped with SIGSTOP: it asks nothing and
reads nothing) and "watching" (resumed with SIGCONT), so that the machine's drift falls on
both alike. Each round measures write throughput and latency through the broker; the ratio
of the medians is what to read, with the CPU time the dashboard itself used while watching.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
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
        try:
            with urllib.request.urlopen(url, timeout=60) as stream:
                while not self._stop:
                    chunk = stream.read1(65536)
                    if not chunk:
                        return
                    self.bytes += len(chunk)
        except OSError:
            return  # the dashboard went away: the page is closed

    def close(self) -> None:
        self._stop = True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bbd.dashboard_cost")
    p.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--clients", type=int, default=16)
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bbd-dashcost-"))
    c = Cluster(root, servers=3)
    c.layout.dashboard = _free_port()
    results: dict[str, list[dict]] = {"not watching": [], "watching": []}
    cpu = 0.0
    watched = 0.0
    page = None
    try:
        c.start()
        c.spawn("dashboard")
        c.wait_up(["dashboard"])
        page = OpenPage(f"http://127.0.0.1:{c.layout.dashboard}/events")
        pid = c.procs["dashboard"].pid
        for r in range(args.rounds):
            order = ["not watching", "watching"]
            for label in order if r % 2 == 0 else order[::-1]:
                if label == "watching":
                    c.signal("dashboard", signal.SIGCONT)
                    time.sleep(1.0)  # its polls resume, the page catches up
                    cpu0, t0 = _cpu_seconds(pid), time.monotonic()
                else:
                    c.signal("dashboard", signal.SIGSTOP)
                out = bench.run(c.frontend, args.clients, args.seconds)
                if label == "watching":
                    cpu += _cpu_seconds(pid) - cpu0
                    watched += time.monotonic() - t0
                results[label].append(out)
                print(f"round {r + 1} {label:<13} {bench.line(out)}", flush=True)
    finally:
        if page is not None:
            page.close()
        if "dashboard" in c.procs:
            c.signal("dashboard", signal.SIGCONT)
        c.stop()
        shutil.rmtree(root, ignore_errors=True)
    print("\nmedians over rounds:")
    med = {}
    for label, runs in results.items():
        med[label] = {k: statistics.median(x[k] for x in runs)
                      for k in ("rate", "p50_ms", "p99_ms")}
        m = med[label]
        print(f"  {label:<13} clients={args.clients:<3} rate={m['rate']:8.1f}/s  "
              f"p50={m['p50_ms']:6.2f} ms  p99={m['p99_ms']:6.2f} ms")
    a, b = med["watching"], med["not watching"]
    print(f"  ratio watching/not watching: throughput {a['rate'] / b['rate']:.3f}x, "
          f"p50 latency {a['p50_ms'] / b['p50_ms']:.3f}x")
    print(f"  the dashboard used {cpu:.2f} s of CPU in {watched:.1f} s of watching "
          f"({100 * cpu / watched:.1f}% of one core); the page received "
          f"{(page.bytes if page else 0) / 1024:.0f} KiB of events")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
