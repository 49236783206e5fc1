"""Memory and start-up of the board, before and after, side by side in one run.

    python -m bbd.memorybench [--before REF] [--posts N] [--replay N] [--gap-history N]
                              [--catch-up N] [--only rss gap catchup replay]

Each figure is taken in a fresh process (``--worker``, this file run as a script with the
code under test first on its path), once for the code at ``REF`` (by default the commit
before the compact board; extracted with ``git archive`` into a temporary directory) and
once for this checkout:

- RSS per stored post: a board filled with 60-character posts from 16 users in 4 channels,
  each with a request id, from 3 origins; each operation decoded from JSON on its own, as
  it arrives from a peer or the journal (its strings are its own).
- The start of a killed server: the journal of ``--replay`` posts read and applied the way
  the server's ``_restore`` does it: wall and CPU time (on a busy machine the CPU time is
  the steadier figure), the RSS it leaves and its peak.
- ``missing_for`` answering a peer that lacks the last 10 operations of one origin, with
  ``--gap-history`` operations held (the best of several batches of calls).
- A new empty board catching up with one of ``--catch-up`` posts through ``missing_for``
  pages, MessagePack and ``Op.from_dict`` (no network, no journal).

Figures are machine- and load-dependent; the ratio column, from one run, is what compares.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

USERS = 16
CHANNELS = 4
ORIGINS = ("servidor-1", "servidor-2", "servidor-3")
TEXT = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod"


def records(n: int) -> Any:
    """The journal records of 16 logins, 4 channels and ``n`` posts, in a plausible order."""
    seqs = dict.fromkeys(ORIGINS, 0)
    clock = 0

    def op(kind: str, fields: dict[str, str], k: int) -> dict[str, Any]:
        nonlocal clock
        origin = ORIGINS[k % len(ORIGINS)]
        seqs[origin] += 1
        clock += 1
        return {"origin": origin, "seq": seqs[origin], "clock": clock, "kind": kind,
                "timestamp": 1_764_000_000.0 + clock / 1000, "fields": fields,
                "rid": f"{k:032x}"}

    k = 0
    for u in range(USERS):
        yield op("login", {"user": f"user-{u:02d}"}, k)
        k += 1
    for c in range(CHANNELS):
        yield op("channel", {"channel": f"canal-{c}"}, k)
        k += 1
    for i in range(n):
        text = f"post {i:09d} {TEXT}"[:60]
        yield op("publish", {"user": f"user-{i % USERS:02d}", "channel": f"canal-{i % CHANNELS}",
                             "message": text}, k)
        k += 1


# -- in the worker process (the code under test is ``bbd`` on sys.path) ----------------

def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _fill(n: int) -> tuple[Any, int]:
    """A board holding ``n`` posts (and the logins and channels), built op by op from
    decoded JSON; and the RSS it added."""
    from bbd.state import Board, Op

    gc.collect()
    before = _rss()
    board = Board("servidor-1")
    batch: list[bytes] = []

    def flush() -> None:
        for d in json.loads(b"[" + b",".join(batch) + b"]"):
            board.apply(Op(d["origin"], d["seq"], d["clock"], d["kind"], d["timestamp"],
                           d["fields"], d.get("rid")))
        batch.clear()

    for r in records(n):
        batch.append(json.dumps(r).encode())
        if len(batch) == 5000:
            flush()
    flush()
    gc.collect()
    return board, _rss() - before


def work_rss(n: int) -> dict[str, float]:
    board, grown = _fill(n)
    assert len(board.posts) == n
    return {"rss_per_post": grown / n}


def work_replay(directory: str, n: int) -> dict[str, float]:
    """Restore a board from the journal as ``BoardServer._restore`` does."""
    from bbd.lamport import LamportClock
    from bbd.state import Board, Op
    from bbd.store import Journal

    gc.collect()
    before = _rss()
    journal = Journal(Path(directory))
    board = Board("servidor-1")
    lamport = LamportClock()
    began, cpu = time.perf_counter(), time.process_time()
    from bbd import state

    if hasattr(state, "read_journal"):  # as BoardServer._restore does it
        from bbd import gcpause

        with gcpause.held(freeze=True):
            loaded, ops, _ = state.read_journal(journal)
            board.load(ops)
            lamport.observe(max((op.clock for op in ops), default=0))
            del ops
    elif hasattr(board, "replay"):  # block by block, through Board.replay
        loaded = journal.load(lambda block: lamport.observe(board.replay(block)[0]))
    else:  # the code before: the whole journal as dicts, then validated op by op
        loaded = journal.load()
        for record in loaded.records:
            op = Op.from_dict(record)
            board.apply(op)
            lamport.observe(op.clock)
        del record, loaded
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    gc.collect()
    assert len(board.posts) == n
    return {"replay_s": seconds, "replay_cpu_s": cpu,
            "replay_rss_per_post": (_rss() - before) / n,
            "replay_peak_mb": _peak() / 2**20}


def work_gap(n: int) -> dict[str, float]:
    board, _ = _fill(n)
    vector = dict(board.vector)
    vector[ORIGINS[0]] -= 10
    out, more = board.missing_for(vector, 5000)
    assert len(out) == 10 and not more
    # The best of several batches: the least disturbed by the rest of the machine.
    calls, best, began = 1, float("inf"), time.perf_counter()
    while time.perf_counter() - began < 2.0:
        start = time.perf_counter()
        for _ in range(calls):
            board.missing_for(vector, 5000)
        took = time.perf_counter() - start
        best = min(best, took / calls)
        if took < 0.05:
            calls *= 2
    return {"gap_ms": best * 1000}


def work_catchup(n: int) -> dict[str, float]:
    """A new empty board catching up with one that holds ``n`` posts, page by page as
    ``pull`` does it (the pages through MessagePack, each operation validated like any
    from a peer), without the network and the journal."""
    import msgpack

    from bbd.state import Board, Op

    source, _ = _fill(n)
    target = Board("servidor-9")
    began, cpu = time.perf_counter(), time.process_time()
    after = None
    while True:
        ops, more = source.missing_for(target.vector, 5000, after)
        page = msgpack.unpackb(msgpack.packb({"ops": [op.to_dict() for op in ops]}))
        taken = [Op.from_dict(d) for d in page["ops"]]
        for op in taken:
            target.apply(op)
        if not more or not taken:
            break
        after = (taken[-1].origin, taken[-1].seq)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    assert len(target.posts) == n
    return {"catchup_s": seconds, "catchup_cpu_s": cpu}


WORK = {"rss": work_rss, "replay": work_replay, "gap": work_gap, "catchup": work_catchup}


# -- in the driver ---------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()


def default_before() -> str:
    """The commit before the one that brought the compact board in."""
    commits = _git("log", "--format=%H", "-S", "def from_journal", "--", "bbd/state.py")
    if not commits:
        raise SystemExit("no commit with the compact board found: pass --before REF")
    return commits.splitlines()[-1] + "^"


def extract(ref: str, into: Path) -> Path:
    archive = into / "before.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "archive", ref, "bbd"], cwd=ROOT, check=True, stdout=f)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "before", filter="data")
    return into / "before"


def write_journal(directory: Path, n: int) -> None:
    from bbd.store import encode_record

    with (directory / "journal.log").open("wb") as f:
        batch = []
        for r in records(n):
            batch.append(encode_record(r))
            if len(batch) == 10_000:
                f.write(b"".join(batch))
                batch.clear()
        f.write(b"".join(batch))


def run_worker(tree: Path, work: str, *args: Any) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, __file__, "--worker", work, *map(str, args)],
                         env=env, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if Path(result.pop("tree")) != tree.resolve():
        raise SystemExit(f"the worker did not run the code under {tree}")
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", help="git ref of the code to compare with "
                   "(default: the commit before the compact board)")
    p.add_argument("--posts", type=int, default=200_000, help="posts for RSS per post")
    p.add_argument("--replay", type=int, default=1_000_000, help="posts in the journal")
    p.add_argument("--gap-history", type=int, default=100_000,
                   help="operations held when missing_for answers a 10-operation gap")
    p.add_argument("--catch-up", type=int, default=200_000,
                   help="posts a new empty board catches up with")
    p.add_argument("--only", nargs="+", choices=sorted(WORK), default=sorted(WORK),
                   help="the figures to take (default: all)")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        import bbd

        work, *args = a.worker
        result: dict[str, Any] = WORK[work](*(int(x) if x.isdigit() else x for x in args))
        print(json.dumps({**result, "tree": str(Path(bbd.__file__).resolve().parent.parent)}))
        return
    ref = a.before or default_before()
    with tempfile.TemporaryDirectory(prefix="memorybench-") as tmp:
        trees = {"before": extract(ref, Path(tmp)), "after": ROOT}
        journal = Path(tmp) / "journal"
        journal.mkdir()
        if "replay" in a.only:
            print(f"writing a journal of {a.replay:,} posts ...", flush=True)
            write_journal(journal, a.replay)
        results: dict[str, dict[str, float]] = {"before": {}, "after": {}}
        # Alternating, so that a change of load on the machine hits both sides alike.
        for work, args in (("rss", (a.posts,)), ("gap", (a.gap_history,)),
                           ("catchup", (a.catch_up,)), ("replay", (journal, a.replay))):
            if work not in a.only:
                continue
            for side in ("before", "after"):
                print(f"  {work} ({side}) ...", flush=True)
                results[side].update(run_worker(trees[side], work, *args))
    rows = [
        (f"RSS per stored post (board of {a.posts:,} posts)", "rss_per_post", "{:,.0f} B"),
        (f"replay of a {a.replay:,}-post journal, wall", "replay_s", "{:,.1f} s"),
        ("  CPU time of the replay", "replay_cpu_s", "{:,.1f} s"),
        ("  RSS per post after the replay", "replay_rss_per_post", "{:,.0f} B"),
        ("  peak RSS during the replay", "replay_peak_mb", "{:,.0f} MB"),
        (f"missing_for, 10-op gap, {a.gap_history:,} held", "gap_ms", "{:,.3f} ms"),
        (f"catch-up of {a.catch_up:,} posts, wall", "catchup_s", "{:,.1f} s"),
        ("  CPU time of the catch-up", "catchup_cpu_s", "{:,.1f} s"),
    ]
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"\nbefore = {ref}, after = this checkout; load average {load} "
          f"on {os.cpu_count()} cores\n")
    print(f"| {'figure':<48} | {'before':>12} | {'after':>12} | after/before |")
    print(f"|{'-' * 50}|{'-' * 14}|{'-' * 14}|--------------|")
    for label, key, fmt in rows:
        if key not in results["after"]:
            continue
        b, f_ = results["before"][key], results["after"][key]
        print(f"| {label:<48} | {fmt.format(b):>12} | {fmt.format(f_):>12} | "
              f"{f_ / b:>11.3f}x |")


if __name__ == "__main__":
    if "--worker" in sys.argv:
        here = str(Path(__file__).resolve().parent)
        sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(here)]
    main()
