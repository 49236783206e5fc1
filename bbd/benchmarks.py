"""``make bench``: write throughput and latency of a board against a baseline.

Two clusters run at once on this machine and measurements alternate between them, round
after round, so that the machine's noise falls on both alike; the ratio is what to read.

* ``--compare replication`` (default): one server without replication (the baseline)
  against three replicated servers.
* ``--compare auth``: three replicated servers in classroom mode (``--no-auth``, the
  baseline) against the same with CURVE on every internal link: the cost of
  authentication.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from bbd import bench
from bbd.localcluster import Cluster


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bbd.benchmarks")
    p.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    p.add_argument("--compare", choices=["replication", "auth"], default="replication")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bbd-bench-"))
    if args.compare == "auth":
        clusters = {"3 servers, no auth": Cluster(root / "open", authenticated=False),
                    "3 servers, CURVE": Cluster(root / "curve")}
    else:
        clusters = {"1 server, no replication": Cluster(root / "one", servers=1),
                    "3 servers, replicated": Cluster(root / "three", servers=3)}
    results: dict[tuple[str, int], list[dict]] = {}
    try:
        for c in clusters.values():
            c.start()
        for r in range(args.rounds):
            for n in args.clients:
                for label, c in clusters.items():
                    out = bench.run(c.frontend, n, args.seconds)
                    results.setdefault((label, n), []).append(out)
                    print(f"round {r + 1} {label:<26} {bench.line(out)}", flush=True)
    finally:
        for c in clusters.values():
            c.stop()
        shutil.rmtree(root, ignore_errors=True)
    print("\nmedians over rounds:")
    med: dict[tuple[str, int], dict] = {}
    for key, runs in results.items():
        med[key] = {k: statistics.median(r[k] for r in runs)
                    for k in ("rate", "p50_ms", "p90_ms", "p99_ms")}
        m = med[key]
        print(f"  {key[0]:<26} clients={key[1]:<3} rate={m['rate']:8.1f}/s  "
              f"p50={m['p50_ms']:6.2f} ms  p90={m['p90_ms']:6.2f} ms  p99={m['p99_ms']:6.2f} ms")
    base, repl = clusters
    for n in args.clients:
        ratio = med[(repl, n)]["rate"] / med[(base, n)]["rate"]
        print(f"  ratio {repl}/{base}, {n} clients: throughput {ratio:.2f}x, "
              f"p50 latency {med[(repl, n)]['p50_ms'] / med[(base, n)]['p50_ms']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
