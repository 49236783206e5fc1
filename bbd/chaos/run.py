"""``bbd chaos``: a cluster with a network namespace per daemon, concurrent recording
clients, a seeded schedule of faults; then heal, converge, check, report.

The cluster has two brokers: the main one in front of every server but the last, and
``broker-2`` in front of the last, with one client of its own, so that a clean split leaves
clients on both sides."""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bbd import config, netns
from bbd.chaos import checker
from bbd.chaos.checker import FILES, Verdict, Violation
from bbd.chaos.nemesis import Nemesis
from bbd.chaos.schedule import KINDS, PARTITIONS, plan
from bbd.chaos.workload import Record, Workload, own_posts_seen
from bbd.localcluster import wait_for
from bbd.netns import NetCluster

# After a heal the two sides still hold different operations until they have exchanged
# them (the next anti-entropy round, or a peer timeout): a grant in that tail still counts
# as one made during the partition.
PARTITION_TAIL = config.timing("anti_entropy_interval") + config.timing("peer_timeout")


def converged(cluster: NetCluster) -> dict[str, Any] | None:
    """Every server's vector once all hold the same operations, written to their files."""
    statuses = [cluster.status(n) for n in cluster.names()]
    if all(s and s["ready"] and s["files_current"] for s in statuses) and \
            all(s["vector"] == statuses[0]["vector"] for s in statuses):
        return statuses[0]["vector"]
    return None


def run(seed: int, seconds: float, out: Path, clients: int = 6, servers: int = 3,
        recovery: float = 3.0, converge_timeout: float = 60.0,
        hold: tuple[float, float] = (1.0, 4.0), gap: tuple[float, float] = (1.0, 3.0),
        say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One run: faults (each held ``hold`` s, after ``gap`` s of calm) until ``seconds``
    have passed and every kind has happened; the report (also written to
    ``out``/report.json, with requests.jsonl and timeline.png beside it)."""
    say = say or (lambda line: print(line, flush=True))
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(tz=UTC).isoformat(timespec="seconds")
    names = [f"servidor-{i}" for i in range(1, servers + 1)]
    cluster = NetCluster(out / "cluster", servers=servers, brokers=2,
                         broker_of={names[-1]: "broker-2"})
    split = (["reference", "proxy", "broker", *names[:-1]], ["broker-2", names[-1]])
    try:
        began = time.monotonic()
        cluster.start(60)
        say(f"cluster up in {time.monotonic() - began:.1f} s: {', '.join(cluster.daemon_names())}")
        t0 = time.monotonic()

        def clock() -> float:
            return round(time.monotonic() - t0, 4)

        record = Record(clock)
        frontends = [cluster.frontend_of("broker")] * (clients - 1) + \
            [cluster.frontend_of("broker-2")]
        workload = Workload(record, frontends, seed)
        workload.setup()
        workload.start()
        faults = plan(seed, int(seconds / (hold[0] + gap[0])) + len(KINDS) + 1, names,
                      hold=hold, gap=gap)
        nemesis = Nemesis(cluster, split, clock)
        say(f"seed {seed}: faults for {seconds:.0f} s (and at least one of each kind), "
            f"{clients} clients")
        try:
            for fault in faults:
                kinds = {a.fault.kind for a in nemesis.applied}
                if clock() >= seconds and kinds >= set(KINDS) or nemesis.stop.wait(fault.gap):
                    break
                a = nemesis.apply(fault)
                say(f"  {a.start:7.2f} s  {fault.kind:<17} {fault.target:<12} held "
                    f"{fault.hold:.2f} s, ready after {(a.ready or a.start) - a.start:.2f} s"
                    + (f"  ERROR {a.error}" if a.error else ""))
        finally:
            nemesis.restore()
        workload.stop.wait(recovery)  # the load goes on a while on the whole cluster
        workload.close()
        load_end = clock()
        try:
            vector = wait_for(lambda: converged(cluster), converge_timeout, "convergence", 0.2)
            convergence: float | None = clock() - load_end
        except AssertionError:
            vector, convergence = None, None
        requests = record.snapshot()
        wanted = checker.acked_posts(requests)
        seen = {user: own_posts_seen(cluster.frontend_of(
                    "broker-2" if user == workload.users[-1] else "broker"), user, posts)
                for user, posts in wanted.items()}
        files = {n: {f: (cluster.data_dir(n) / f).read_text() for f in FILES} for n in names}
        windows = [(a.start, (a.undone or clock()) + PARTITION_TAIL) for a in nemesis.applied
                   if a.fault.kind in PARTITIONS]
        verdict = checker.check(requests, files, windows, seen)
        if convergence is None:
            verdict.violations.append(Violation(
                "no convergence", f"servers did not hold the same operations {converge_timeout}"
                f" s after the load stopped: {[cluster.status(n) for n in names]}"))
        for a in nemesis.applied:
            if a.error:
                verdict.violations.append(Violation("fault not undone", f"{a.fault.kind} "
                                                    f"{a.fault.target}: {a.error}", at=a.start))
    finally:
        cluster.stop()
    report = {
        "seed": seed, "seconds": seconds, "started": started, "servers": names,
        "clients": clients, "verdict": "PASS" if verdict.ok else "FAIL",
        "counts": verdict.counts,
        "faults_by_kind": dict(Counter(a.fault.kind for a in nemesis.applied)),
        "faults": [a.to_dict() for a in nemesis.applied],
        "load_seconds": load_end, "convergence_seconds": convergence,
        "operations_held": sum(vector.values()) if vector else None,
        "violations": [v.to_dict() for v in verdict.violations], "notes": verdict.notes,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    with (out / "requests.jsonl").open("w") as f:
        for r in requests:
            f.write(json.dumps(r.to_dict()) + "\n")
    from bbd.chaos import timeline  # matplotlib: only when drawing

    timeline.draw(out / "timeline.png", requests, nemesis.applied, verdict.violations,
                  f"bbd chaos, seed {seed}: {report['verdict']}, "
                  f"{len(verdict.violations)} violations")
    say(summary(report, verdict))
    return report


def summary(report: dict[str, Any], verdict: Verdict) -> str:
    c = report["counts"]
    lines = [
        f"verdict: {report['verdict']} (seed {report['seed']})",
        f"operations: {c['operations']}, acknowledged {c.get('acknowledged', 0)}, refused "
        f"{c.get('refused', 0)}, timed out {c.get('timed out', 0)}",
        "by service: " + ", ".join(f"{s} {sum(o.values())}" for s, o in c["by_service"].items()),
        "faults: " + ", ".join(f"{k} {n}" for k, n in sorted(report["faults_by_kind"].items())),
        f"load {report['load_seconds']:.0f} s; converged "
        + (f"{report['convergence_seconds']:.2f} s after it stopped, "
           f"{report['operations_held']} operations on every server"
           if report["convergence_seconds"] is not None else "NEVER"),
    ]
    lines += [f"note: {n}" for n in verdict.notes]
    by_kind = Counter(v.kind for v in verdict.violations)
    lines.append("violations: " + (", ".join(f"{k} {n}" for k, n in by_kind.items())
                                   or "none"))
    for v in verdict.violations[:20]:
        lines.append(f"  {v.kind}: {v.detail}" + (f" [{', '.join(v.rids[:5])}]" if v.rids
                                                   else ""))
    return "\n".join(lines)


def parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``bbd chaos``, added to ``p`` (a subcommand's parser) or a new one."""
    p = p or argparse.ArgumentParser(prog="bbd chaos", description=__doc__)
    p.add_argument("--seed", type=int, default=None, help="default: a random one (printed)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="length of the fault schedule")
    length.add_argument("--seconds", type=float, help="length of the fault schedule "
                        "(default 60)")
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--servers", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("chaos-report"),
                   help="report.json, requests.jsonl, timeline.png and daemon logs go here")
    return p


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    # A SIGTERM unwinds like Ctrl-C, so that the cluster and its namespaces are removed.
    signal.signal(signal.SIGTERM, _terminate)
    why = netns.unavailable()
    if why:
        print(f"bbd chaos: {why}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    seconds = args.minutes * 60 if args.minutes else (args.seconds or 60.0)
    report = run(seed, seconds, args.out.resolve(), args.clients, args.servers)
    print(f"report: {args.out / 'report.json'}, timeline: {args.out / 'timeline.png'}")
    return 0 if report["verdict"] == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main(parser().parse_args()))
