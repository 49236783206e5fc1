"""``make bench``: the replicated board against a one-server baseline, and the readiness
broker against today's round-robin relay, each pair side by side in one run.

``replication``: one server without replication (the baseline) and three replicated
servers. ``broker``: two three-server clusters, one behind the round-robin relay, one
behind the readiness broker, first with every server running, then with one server
SIGSTOPped for ``--hang`` seconds under the same load (16 clients, 2 s per try, three
tries with the same request id, as the C client and the bot do). Measurements alternate
between the clusters so that the machine's noise falls on both alike; ratios are what to
read.

``auth``: three replicated servers in classroom mode (``--no-auth``, the baseline) against
the same with CURVE on every internal link: the cost of authentication. It first times the
bare link as well: round trips over one DEALER -> ROUTER pair with and without CURVE, 100
requests in flight, in this process.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import tempfile
import time
from pathlib import Path

import zmq

from bbd import auth, bench
from bbd.localcluster import Cluster

KEYS = ("rate", "p50_ms", "p90_ms", "p99_ms", "timeouts", "failed")

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



def _median(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in KEYS}


def auth_suite(root: Path, args: argparse.Namespace) -> None:
    compare_links(root / "link-keys", min(args.seconds, 2.0), args.rounds)
    _side_by_side({"3 servers, no auth": Cluster(root / "open", authenticated=False),
                   "3 servers, CURVE": Cluster(root / "curve")}, args)


def replication(root: Path, args: argparse.Namespace) -> None:
    _side_by_side({"1 server, no replication": Cluster(root / "one", servers=1),
                   "3 servers, replicated": Cluster(root / "three", servers=3)}, args)


def _side_by_side(clusters: dict[str, Cluster], args: argparse.Namespace) -> None:
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
    print("\nmedians over rounds:")
    med: dict[tuple[str, int], dict] = {}
    for key, runs in results.items():
        m = med[key] = _median(runs)
        print(f"  {key[0]:<26} clients={key[1]:<3} rate={m['rate']:8.1f}/s  "
              f"p50={m['p50_ms']:6.2f} ms  p90={m['p90_ms']:6.2f} ms  p99={m['p99_ms']:6.2f} ms")
    base, repl = clusters
    for n in args.clients:
        ratio = med[(repl, n)]["rate"] / med[(base, n)]["rate"]
        print(f"  ratio {repl}/{base}, {n} clients: throughput {ratio:.2f}x, "
              f"p50 latency {med[(repl, n)]['p50_ms'] / med[(base, n)]['p50_ms']:.2f}x")


def broker(root: Path, args: argparse.Namespace) -> None:
    clusters = {"round-robin relay": Cluster(root / "relay", routing="round-robin"),
                "readiness broker": Cluster(root / "readiness")}
    n, timeout = args.broker_clients, 2.0
    running: dict[str, list[dict]] = {label: [] for label in clusters}
    hung: dict[str, dict] = {}
    just_before: dict[str, dict] = {}
    after: dict[str, dict] = {}
    try:
        for c in clusters.values():
            c.start()
        for r in range(args.rounds):
            order = list(clusters.items())
            for label, c in order if r % 2 == 0 else order[::-1]:  # neither always first
                time.sleep(1)  # let the last measurement's background work (snapshots) settle
                out = bench.run(c.frontend, n, args.seconds, timeout=timeout)
                running[label].append(out)
                print(f"round {r + 1} all running  {label:<18} {bench.line(out)}", flush=True)
        for label, c in clusters.items():
            victim = c.names()[-1]
            # The machine's load drifts over a run: also compare with a measurement taken
            # right before the stop.
            just_before[label] = bench.run(c.frontend, n, args.seconds, timeout=timeout)
            print(f"just before       {label:<18} {bench.line(just_before[label])}", flush=True)
            c.signal(victim, signal.SIGSTOP)
            try:
                hung[label] = bench.run(c.frontend, n, args.hang, timeout=timeout,
                                        probe=False)
            finally:
                c.signal(victim, signal.SIGCONT)
            print(f"{victim} stopped     {label:<18} {bench.line(hung[label])}", flush=True)
            time.sleep(3)  # the third row: 3 s after SIGCONT
            after[label] = bench.run(c.frontend, n, args.seconds, timeout=timeout)
            print(f"after SIGCONT     {label:<18} {bench.line(after[label])}", flush=True)
            c.wait_up([victim], timeout=60)
    finally:
        for c in clusters.values():
            c.stop()
    print(f"\n{n} clients, {timeout:.0f} s per try, 3 tries; all running: median of "
          f"{args.rounds} x {args.seconds:.0f} s; one of three servers SIGSTOPped "
          f"{args.hang:.0f} s:")
    print(f"  {'':<18} {'':<16} {'publish/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'timeouts':>9} {'failed':>7}")
    med = {label: _median(runs) for label, runs in running.items()}
    for label in clusters:
        for what, m in (("all running", med[label]), ("one stopped", hung[label]),
                        ("3 s after resume", after[label])):
            print(f"  {label:<18} {what:<16} {m['rate']:10.1f} {m['p50_ms']:8.1f} "
                  f"{m['p99_ms']:8.1f} {m['timeouts']:9.0f} {m['failed']:7.0f}")
    relay, ready = clusters
    for label in clusters:
        print(f"  {label}: publish/s one stopped / all running "
              f"{hung[label]['rate'] / med[label]['rate']:.2f}x (/ the measurement just "
              f"before the stop: {hung[label]['rate'] / just_before[label]['rate']:.2f}x)")
    # Each round measures both back to back, so the ratio within a round sees the same
    # noise; the order alternates (the second of a pair runs a little slower), so over an
    # even number of rounds the geometric mean cancels that bias.
    paired = [a["rate"] / b["rate"] for a, b in zip(running[ready], running[relay], strict=True)]
    print(f"  all running, readiness broker / round-robin relay: "
          f"{statistics.geometric_mean(paired):.2f}x publish/s (geometric mean of the rounds' "
          f"ratios {', '.join(f'{x:.2f}' for x in paired)}; ratio of medians "
          f"{med[ready]['rate'] / med[relay]['rate']:.2f}x)")


SUITES = ["replication", "broker", "auth"]
DEFAULT_SUITES = ["replication", "broker"]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bbd.benchmarks")
    # Checked below, not with ``choices``: this Python's argparse checks an optional
    # positional's list (its default, or [] when none is given) against the choices as
    # one value, and refused every run without arguments (``make bench``).
    p.add_argument("suites", nargs="*", metavar="SUITE",
                   help=f"any of {', '.join(SUITES)} (default: {' '.join(DEFAULT_SUITES)})")
    p.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    p.add_argument("--rounds", type=int, default=4, help="even: each cluster goes first "
                   "as often as the other")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 16],
                   help="replication suite")
    p.add_argument("--broker-clients", type=int, default=16, help="broker suite")
    p.add_argument("--hang", type=float, default=15.0,
                   help="broker suite: seconds one server stays SIGSTOPped")
    args = p.parse_args(argv)
    unknown = [suite for suite in args.suites if suite not in SUITES]
    if unknown:
        p.error(f"unknown suite {unknown[0]!r} (choose from {', '.join(SUITES)})")
    args.suites = args.suites or list(DEFAULT_SUITES)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    root = Path(tempfile.mkdtemp(prefix="bbd-bench-"))
    try:
        for suite in args.suites:
            print(f"== {suite} ==", flush=True)
            {"replication": replication, "broker": broker,
             "auth": auth_suite}[suite](root / suite, args)
            print(flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
