"""``make bench``: write throughput and latency of a board against a baseline.

Two clusters run at once on this machine and measurements alternate between them, round
after round, so that the machine's noise falls on both alike; the ratio is what to read.

* ``--compare replication`` (default): one server without replication (the baseline)
  against three replicated servers.
* ``--compare auth``: three replicated servers in classroom mode (``--no-auth``, the
  baseline) against the same with CURVE on every internal link: the cost of
  authentication. It first times the bare link as well: round trips over one
  DEALER -> ROUTER pair with and without CURVE, 100 requests in flight, in this process.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import zmq

from bbd import auth, bench
from bbd.localcluster import Cluster


def link_rate(keys: auth.Keys | None, seconds: float, size: int, window: int = 100) -> float:
    """Round trips per second over one DEALER -> ROUTER link (CURVE if ``keys``)."""
    ctx = zmq.Context()
    guard = auth.Guard(ctx, keys).start()
    server = auth.secure(ctx.socket(zmq.ROUTER), auth.server_options(keys))
    client = auth.secure(ctx.socket(zmq.DEALER), auth.client_options(keys))
    try:
        port = server.bind_to_random_port("tcp://127.0.0.1")
        client.connect(f"tcp://127.0.0.1:{port}")
        body = b"x" * size
        client.send(body)  # the handshake, outside the timing
        server.send_multipart(server.recv_multipart())
        client.recv()
        done = 0
        began = time.perf_counter()
        stop = began + seconds
        for _ in range(window):
            client.send(body)
        while time.perf_counter() < stop:
            server.send_multipart(server.recv_multipart())
            client.recv()
            done += 1
            client.send(body)
        return done / (time.perf_counter() - began)
    finally:
        for sock in (client, server):
            sock.close(0)
        guard.stop()
        ctx.term()


def compare_links(keys_dir: Path, seconds: float, rounds: int) -> None:
    auth.create(keys_dir)
    keys = auth.load(keys_dir)
    for size in (64, 4096):
        runs: dict[str, list[float]] = {"no auth": [], "CURVE": []}
        for _ in range(rounds):
            runs["no auth"].append(link_rate(None, seconds, size))
            runs["CURVE"].append(link_rate(keys, seconds, size))
        med = {k: statistics.median(v) for k, v in runs.items()}
        print(f"link, {size:>4}-byte messages: no auth {med['no auth']:9.0f}/s  CURVE "
              f"{med['CURVE']:9.0f}/s  ratio {med['CURVE'] / med['no auth']:.2f}x", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bbd.benchmarks")
    p.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    p.add_argument("--compare", choices=["replication", "auth"], default="replication")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bbd-bench-"))
    if args.compare == "auth":
        compare_links(root / "link-keys", min(args.seconds, 2.0), args.rounds)
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
