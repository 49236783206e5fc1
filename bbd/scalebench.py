"""``make bench``: the write path against the echo limit, at history sizes 0 and 100,000.

One run, clusters side by side, rounds alternating between them so the machine's noise
falls on all alike:

- ``echo``: the limit. The same readiness broker with a minimal pyzmq worker behind it that
  answers every request with a constant ``OK`` (no parsing, no state, no disk).
- ``1 server`` and ``3 servers``: the board (``bbd.localcluster``), each at every history
  size: its servers start from a journal already holding that many posts.

The load comes from several processes (``--procs``), each with client threads on their own
REQ sockets sending ``publish`` back to back, so the generator is not the bottleneck. Also
reported, per board: CPU seconds per operation per server (from /proc), RSS per stored post,
the time for a SIGKILLed server with the history to be ready again, and for a new, empty
server to hold the whole history. The table goes to the console and into
docs/benchmarks.md (between markers), the figure to docs/scalebench.png.

    python -m bbd.scalebench [--history 0 100000] [--million] [--clients 1 16]
                             [--seconds 4] [--rounds 3] [--procs 4] [--no-write]
                             [--recovery-only]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from math import inf, nan
from pathlib import Path

import msgpack
import zmq

from bbd import auth, loadbalance
from bbd.localcluster import Cluster, wait_for

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
FIGURE = ROOT / "docs" / "scalebench.png"
START, END = "<!-- scalebench:start -->", "<!-- scalebench:end -->"
USER = CHANNEL = "bbd-bench"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
LAG_GIVE_UP = 10.0  # a post not in the files this long after its reply counts as never


# -- the echo worker (its own process) ---------------------------------------------------

def echo_worker(backend: str, keys_dir: str) -> None:
    """Speak the broker's worker protocol and answer every request with the same ``OK``."""
    keys = auth.load(Path(keys_dir))
    ctx = zmq.Context()
    sock = auth.secure(ctx.socket(zmq.DEALER), auth.client_options(keys))
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(backend)
    reply = msgpack.packb({"service": "publish", "data": {
        "status": "OK", "timestamp": 0.0, "clock": 0}}, use_bin_type=True)
    ready = [loadbalance.PROTOCOL, loadbalance.READY, b"64", b"echo"]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    next_beat = 0.0
    while True:
        now = time.monotonic()
        if now >= next_beat:
            sock.send_multipart(ready)
            next_beat = now + 0.25
        if not sock.poll(100):
            continue
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(frames) == 4 and frames[1] == loadbalance.REQUEST:
                sock.send_multipart([loadbalance.PROTOCOL, loadbalance.REPLY, frames[2], reply])


# -- the load generator (its own processes) ----------------------------------------------

def load_worker(frontend: str, clients: int, seconds: float, at: float, tag: str) -> None:
    """``clients`` threads from wall time ``at`` for ``seconds``; prints the latencies (s)
    and the count of failed requests as one JSON line."""
    ctx = zmq.Context()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failed = [0] * clients

    def client(k: int) -> None:
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(frontend)
        time.sleep(max(0.0, at - time.time()))
        stop = time.monotonic() + seconds
        n = 0
        while time.monotonic() < stop:
            n += 1
            body = msgpack.packb({"service": "publish", "data": {
                "user": USER, "channel": CHANNEL, "message": f"{tag}-{k}-{n}",
                "id": uuid.uuid4().hex, "timestamp": time.time(), "clock": 0}},
                use_bin_type=True)
            t0 = time.perf_counter()
            sock.send(body)
            if sock.poll(5000):
                reply = msgpack.unpackb(sock.recv(), raw=False)
                if reply.get("data", {}).get("status") == "OK":
                    latencies[k].append(time.perf_counter() - t0)
                    continue
            else:  # lazy pirate: a REQ socket that lost its reply is stuck
                sock.close(0)
                sock = ctx.socket(zmq.REQ)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(frontend)
            failed[k] += 1
        sock.close(0)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"lat": [x for per in latencies for x in per], "failed": sum(failed)}))


def load(frontend: str, clients: int, seconds: float, procs: int) -> dict[str, float]:
    """``clients`` spread over up to ``procs`` processes, started together."""
    procs = max(1, min(procs, clients))
    share = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    at = time.time() + 1.0  # every process is up and connected by then
    tag = uuid.uuid4().hex[:6]
    children = [subprocess.Popen(
        [sys.executable, "-m", "bbd.scalebench", "--load-worker", frontend, str(n),
         str(seconds), str(at), f"{tag}{i}"], stdout=subprocess.PIPE, text=True)
        for i, n in enumerate(share)]
    lat: list[float] = []
    failed = 0
    for child in children:
        out, _ = child.communicate(timeout=seconds + 60)
        result = json.loads(out.strip().splitlines()[-1])
        lat += result["lat"]
        failed += result["failed"]
    cuts = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [nan] * 99
    return {"rate": len(lat) / seconds, "p50_ms": cuts[49] * 1e3, "p99_ms": cuts[98] * 1e3,
            "failed": failed}


# -- /proc ----------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


# -- the setups ------------------------------------------------------------------------

class Setup:
    def __init__(self, name: str, root: Path, servers: int, history: int) -> None:
        self.name, self.servers, self.history = name, servers, history
        self.cluster = Cluster(root, servers=servers)

    def start(self) -> Setup:
        from bbd.memorybench import write_journal

        if self.history:
            for name in self.cluster.names():
                directory = self.cluster.data_dir(name)
                directory.mkdir(parents=True, exist_ok=True)
                write_journal(directory, self.history)
        self.cluster.start(timeout=120)
        with self.cluster.client(timeout=10) as c:
            c.request("login", {"user": USER})
            c.request("channel", {"channel": CHANNEL})
        return self

    @property
    def frontend(self) -> str:
        return self.cluster.frontend

    def pids(self) -> list[int]:
        return [self.cluster.procs[n].pid for n in self.cluster.names()]

    def wait_files_written(self, timeout: float = 600) -> None:
        """Until every server has written its data files (a server started from a
        journal writes them from scratch first, in a thread: seconds at a million)."""
        c = self.cluster
        wait_for(lambda: all((c.status(n) or {}).get("files_current") for n in c.names()),
                 timeout, f"the data files of {self.name} with {self.history:,} posts")

    def stop(self) -> None:
        self.cluster.stop()


class Echo(Setup):
    def __init__(self, root: Path) -> None:
        super().__init__("echo", root, 0, 0)
        self.worker: subprocess.Popen | None = None

    def start(self) -> Echo:
        self.cluster.spawn("broker")
        self.cluster.wait_up(["broker"])
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "bbd.scalebench", "--echo-worker",
             self.cluster.layout.url(self.cluster.layout.backend), str(self.cluster.layout.keys)])
        wait_for(lambda: any(w.get("routing") for w in
                             (self.cluster.broker_view() or {}).get("workers", [])),
                 30, "the echo worker to be routed to")
        return self

    def pids(self) -> list[int]:
        return [self.worker.pid] if self.worker else []

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.terminate()
            self.worker.wait(10)
        super().stop()


def measure(setup: Setup, clients: int, seconds: float, procs: int,
            probe_files: bool = False) -> dict[str, float]:
    """One load run; with ``probe_files``, also how far the data files fall behind the
    acknowledged writes meanwhile (``files_lag_s``, the worst probe)."""
    pids = setup.pids()
    cpu0 = [cpu_seconds(p) for p in pids]
    stop, lags = threading.Event(), []
    prober = threading.Thread(target=files_lag, args=(setup, stop, lags)) if probe_files \
        else None
    if prober is not None:
        prober.start()
    try:
        result = load(setup.frontend, clients, seconds, procs)
    finally:
        stop.set()
        if prober is not None:
            prober.join()
    done = result["rate"] * seconds
    used = [cpu_seconds(p) - c for p, c in zip(pids, cpu0, strict=True)]
    result["cpu_ms_per_op"] = statistics.fmean(used) / done * 1e3 if done and used else nan
    if lags:
        result["files_lag_s"] = max(lags)
    return result


def files_lag(setup: Setup, stop: threading.Event, lags: list[float]) -> None:
    """While the load runs: every 0.2 s a marked post through the broker and, once it is
    acknowledged, the time until every server's publicacoes.json holds it (read from its
    tail, where new posts land)."""
    files = [setup.cluster.data_dir(n) / "publicacoes.json" for n in setup.cluster.names()]
    with setup.cluster.client(timeout=10) as c:
        while not stop.is_set():
            marker = f"files-lag-{uuid.uuid4().hex}"
            reply = c.request("publish", {"user": USER, "channel": CHANNEL, "message": marker})
            acked = time.monotonic()
            if reply.get("status") == "OK":  # a refused post is not in the files: no probe
                waiting = set(files)
                while waiting and time.monotonic() - acked < LAG_GIVE_UP:
                    waiting = {f for f in waiting if marker.encode() not in _tail(f)}
                    if waiting:
                        time.sleep(0.05)
                lags.append(time.monotonic() - acked if not waiting else inf)
            stop.wait(0.2)


def _tail(path: Path, size: int = 256 * 1024) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            return f.read()
    except OSError:
        return b""


def recovery(setup: Setup, timeout: float = 300.0) -> dict[str, float]:
    """A SIGKILLed server with the history ready again; then a new, empty one holding it.
    A server not ready within ``timeout`` is reported as ``inf`` (and the table says so)."""
    cluster = setup.cluster
    name = cluster.names()[-1]

    def ready_after(wipe: bool) -> float:
        cluster.kill(name)
        if wipe:
            shutil.rmtree(cluster.data_dir(name))
        t0 = time.monotonic()
        cluster.spawn(name)
        try:
            cluster.wait_up([name], timeout=timeout)
        except AssertionError:
            return inf
        took = time.monotonic() - t0
        applied = (cluster.status(name, timeout=5) or {}).get("applied") or 0
        if applied < setup.history:  # ready without the history: no figure
            print(f"  {name} was ready holding only {applied:,} operations", flush=True)
            return inf
        return took

    out = {"restart_s": ready_after(wipe=False)}
    print(f"  SIGKILLed server with {setup.history:,} posts ready again after "
          f"{out['restart_s']:.1f} s", flush=True)
    out["catchup_s"] = ready_after(wipe=True)
    print(f"  new empty server ready with {setup.history:,} posts after "
          f"{out['catchup_s']:.1f} s", flush=True)
    return out


# -- reporting -------------------------------------------------------------------------

def table(results: dict[tuple[str, int, int], dict[str, float]], extras: dict[int, dict],
          history: list[int], clients: list[int]) -> str:
    lines = ["| setup | history | clients | publish/s | vs echo | p50 | p99 | p99 vs echo "
             "| CPU ms/op/server | failed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for n in clients:
        echo = results[("echo", 0, n)]
        lines.append(f"| echo limit | - | {n} | {echo['rate']:,.0f} | 1.00x "
                     f"| {echo['p50_ms']:.2f} ms | {echo['p99_ms']:.2f} ms | 1.0x "
                     f"| {echo['cpu_ms_per_op']:.3f} | {echo['failed']:.0f} |")
        for setup in ("1 server", "3 servers"):
            for h in history:
                r = results[(setup, h, n)]
                lines.append(
                    f"| {setup} | {h:,} | {n} | {r['rate']:,.0f} "
                    f"| {r['rate'] / echo['rate']:.3f}x | {r['p50_ms']:.2f} ms "
                    f"| {r['p99_ms']:.1f} ms | {r['p99_ms'] / echo['p99_ms']:.1f}x "
                    f"| {r['cpu_ms_per_op']:.3f} | {r['failed']:.0f} |")
    top = max(clients)
    lines += ["", f"| 3 servers, history | vs history 0 ({top} clients) | data files behind the "
              "acknowledged writes (worst probe) | RSS per stored post | SIGKILLed server ready "
              "again | new empty server holds it all |", "|---|---|---|---|---|---|"]
    for h in history:
        e = extras.get(h, {})
        ratio = results[("3 servers", h, top)]["rate"] / results[("3 servers", 0, top)]["rate"]
        lag = results[("3 servers", h, top)].get("files_lag_s", nan)
        lag_text = "never" if lag == inf else f"{lag:.2f} s"
        lines.append(f"| {h:,} | {ratio:.2f}x | {lag_text} "
                     f"| {_bytes(e.get('rss_per_post', nan))} "
                     f"| {_seconds(e.get('restart_s', nan))} "
                     f"| {_seconds(e.get('catchup_s', nan))} |")
    return "\n".join(lines)


def _seconds(value: float) -> str:
    if value != value:  # nan: not measured (an empty history)
        return "-"
    return "not ready in 300 s" if value == inf else f"{value:.1f} s"


def _bytes(value: float) -> str:
    return "-" if value != value else f"{value:,.0f} B"


def figure(results: dict, history: list[int], clients: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for n in clients:
        echo = results[("echo", 0, n)]
        left.axhline(echo["rate"], linestyle=":", color="grey",
                     label=f"echo limit, {n} client(s) (dotted)" if n == clients[0] else None)
        right.axhline(echo["p99_ms"], linestyle=":", color="grey")
        for setup, style in (("1 server", "--"), ("3 servers", "-")):
            xs = [max(h, 1) for h in history]
            left.plot(xs, [results[(setup, h, n)]["rate"] for h in history], style,
                      marker="o", label=f"{setup}, {n} client(s)")
            right.plot(xs, [results[(setup, h, n)]["p99_ms"] for h in history], style,
                       marker="o", label=f"{setup}, {n} client(s)")
    for ax, what in ((left, "publish/s"), (right, "p99 latency (ms)")):
        ax.set_xscale("symlog", linthresh=1)
        ax.set_yscale("log")
        ax.set_xlabel("posts already stored")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    fig.suptitle("BulletInBoard write path against history size (make bench)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_docs(text: str) -> None:
    doc = DOCS.read_text()
    block = f"{START}\n{text}\n{END}"
    if START in doc and END in doc:
        doc = doc[:doc.index(START)] + block + doc[doc.index(END) + len(END):]
    else:
        doc += f"\n## The write path at scale (`make bench`)\n\n{block}\n"
    DOCS.write_text(doc)


def recovery_only(history: list[int]) -> None:
    """``--recovery-only``: per history size, a board of 3 servers started from that many
    posts, then the restart and the new-server figures (printed, nothing written)."""
    root = Path(tempfile.mkdtemp(prefix="bbd-scalebench-"))
    rows = []
    try:
        for h in history:
            print(f"starting 3 servers with {h:,} posts stored", flush=True)
            setup = Setup("3 servers", root / f"s3-h{h}", 3, h)
            try:
                setup.start()
                setup.wait_files_written()  # as after the load rounds
                rows.append((h, recovery(setup)))
            finally:
                setup.stop()
                shutil.rmtree(root / f"s3-h{h}", ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("| 3 servers, history | SIGKILLed server ready again | new empty server holds it all |")
    print("|---|---|---|")
    for h, r in rows:
        print(f"| {h:,} | {_seconds(r['restart_s'])} | {_seconds(r['catchup_s'])} |")


# -- main ------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bbd.scalebench", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--history", type=int, nargs="+", default=[0, 100_000])
    p.add_argument("--million", action="store_true", help="add a history of 1,000,000 posts")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--procs", type=int, default=4, help="load generator processes")
    p.add_argument("--no-write", action="store_true",
                   help="print only; leave docs/benchmarks.md and the figure alone")
    p.add_argument("--recovery-only", action="store_true",
                   help="only the recovery figures (3 servers per history size; no load, no "
                        "echo, no files written)")
    args = p.parse_args(argv)
    history = sorted(set(args.history + ([1_000_000] if args.million else [])))
    if args.recovery_only:
        recovery_only([h for h in history if h])
        return
    root = Path(tempfile.mkdtemp(prefix="bbd-scalebench-"))
    setups: list[Setup] = []
    try:
        setups.append(Echo(root / "echo"))
        setups[-1].start()
        for h in history:
            for servers in (1, 3):
                label = "1 server" if servers == 1 else "3 servers"
                print(f"starting {label} with {h:,} posts stored", flush=True)
                setups.append(Setup(label, root / f"s{servers}-h{h}", servers, h))
                setups[-1].start()
        # A server started from a journal writes its data files from scratch first (in a
        # thread, seconds at a million posts): the rounds measure the board after that.
        for setup in setups[1:]:
            setup.wait_files_written()
        runs: dict[tuple[str, int, int], list[dict]] = {}
        for r in range(args.rounds):
            for n in args.clients:
                for setup in setups:
                    res = measure(setup, n, args.seconds, args.procs,
                                  probe_files=setup.name == "3 servers" and n == max(args.clients))
                    runs.setdefault((setup.name, setup.history, n), []).append(res)
                    print(f"round {r + 1}: {setup.name:<9} history={setup.history:<8} "
                          f"clients={n:<3} {res['rate']:8.0f}/s  p50 {res['p50_ms']:6.2f} ms"
                          f"  p99 {res['p99_ms']:7.2f} ms  failed {res['failed']}", flush=True)
        # Medians over the rounds; for the data files, the worst probe of all rounds.
        results = {k: {f: (max if f == "files_lag_s" else statistics.median)(x[f] for x in v)
                       for f in v[0]} for k, v in runs.items()}
        extras: dict[int, dict] = {}
        empty = next(s for s in setups if s.name == "3 servers" and s.history == 0)
        base_rss = statistics.fmean(rss_bytes(p) for p in empty.pids())
        for setup in setups:
            if setup.name == "3 servers" and setup.history:
                rss = statistics.fmean(rss_bytes(p) for p in setup.pids())
                extras[setup.history] = {"rss_per_post": (rss - base_rss) / setup.history}
                print(f"recovery with {setup.history:,} posts ...", flush=True)
                extras[setup.history].update(recovery(setup))
        text = table(results, extras, history, args.clients)
        print(text, flush=True)
        if not args.no_write:
            write_docs(text)
            figure(results, history, args.clients, FIGURE)
            print(f"written: {DOCS.relative_to(ROOT)}, {FIGURE.relative_to(ROOT)}")
    finally:
        for setup in setups:
            setup.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--echo-worker":
        echo_worker(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "--load-worker":
        load_worker(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]),
                    sys.argv[6])
    else:
        main()
