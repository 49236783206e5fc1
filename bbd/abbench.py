"""The write path of two versions of the code side by side: A/B in one run.

    python -m bbd.abbench REF [--servers 3] [--clients 1 16] [--rounds 4] [--seconds 4]

Checks ``REF`` (a commit, a branch) out into a temporary worktree and starts two boards
from the same harness, one running that code (A) and one running this checkout (B); both
are loaded by the same load generator (bbd.scalebench's processes) in alternating rounds,
so the machine's noise falls on both. Prints each round and, per number of clients, the
median rates, the ratio B/A of each round, and the CPU per write per server.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from bbd.scalebench import Setup, measure

ROOT = Path(__file__).resolve().parent.parent


def worktree(ref: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(where),
                    ref], check=True)
    return where


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bbd.abbench", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("ref", help="the code to compare with (A); this checkout is B")
    p.add_argument("--servers", type=int, default=3)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--procs", type=int, default=4, help="load generator processes")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bbd-abbench-"))
    setups: list[Setup] = []
    try:
        trees = {"A": worktree(args.ref, root / "tree-a"), "B": ROOT}
        for label, tree in trees.items():
            setup = Setup(label, root / label, args.servers, 0)
            # The daemons import bbd from their tree: PYTHONPATH comes before the
            # editable install's path entry.
            setup.cluster.env["PYTHONPATH"] = str(tree)
            setups.append(setup.start())
        runs: dict[tuple[str, int], list[dict[str, float]]] = {}
        for r in range(args.rounds):
            for n in args.clients:
                for setup in setups if r % 2 == 0 else setups[::-1]:
                    res = measure(setup, n, args.seconds, args.procs)
                    runs.setdefault((setup.name, n), []).append(res)
                    print(f"round {r + 1}: {setup.name} clients={n:<3} {res['rate']:7.0f}/s  "
                          f"p50 {res['p50_ms']:6.2f} ms  p99 {res['p99_ms']:7.2f} ms  "
                          f"CPU {res['cpu_ms_per_op']:.3f} ms/op/server", flush=True)
        for n in args.clients:
            def col(label: str, field: str, n: int = n) -> list[float]:
                return [x[field] for x in runs[(label, n)]]

            ratios = [round(b / a, 2) if a else float("nan")
                      for a, b in zip(col("A", "rate"), col("B", "rate"), strict=True)]
            print(f"{n} clients: writes/s A {statistics.median(col('A', 'rate')):.0f}, "
                  f"B {statistics.median(col('B', 'rate')):.0f}, B/A by round {ratios}; "
                  f"CPU ms/op/server A {statistics.median(col('A', 'cpu_ms_per_op')):.3f}, "
                  f"B {statistics.median(col('B', 'cpu_ms_per_op')):.3f}; p99 ms "
                  f"A {statistics.median(col('A', 'p99_ms')):.1f}, "
                  f"B {statistics.median(col('B', 'p99_ms')):.1f}")
    finally:
        for setup in setups:
            setup.stop()
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                        str(root / "tree-a")], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
