"""A small load generator: N concurrent clients, each sending requests back to back.

Prints throughput and latency percentiles. Each client is a thread with its own REQ
socket (pyzmq releases the GIL while it waits), so requests are in flight concurrently.

A board's writes are permanent (there is no delete), so against a shared board every run
writes as the same user into the same channel, both named BENCH_NAME: the lists grow by
those two names once, ever. A private board (``on_own_board``) leaves nothing at all.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from math import nan
from pathlib import Path

from bbd.client import Client, Unavailable, ask_once

BENCH_NAME = "bbd-bench"


class NoBoard(Exception):
    """Nothing answers at the frontend."""


def main(frontend: str, clients: list[int], seconds: float, service: str) -> int:
    """``bbd bench`` against a running board: one line per client count, or one line
    saying why not."""
    try:
        for n in clients:
            print(line(run(frontend, n, seconds, service)), flush=True)
    except NoBoard as e:
        print(f"bbd bench: {e}", file=sys.stderr)
        return 1
    return 0


def on_own_board(clients: list[int], seconds: float, service: str) -> int:
    """``bbd bench --own-board``: a private board on free ports, removed afterwards."""
    from bbd.localcluster import Cluster

    root = Path(tempfile.mkdtemp(prefix="bbd-bench-"))
    cluster = Cluster(root)
    try:
        cluster.start()
        print(f"private board: 3 servers, broker {cluster.frontend}", flush=True)
        return main(cluster.frontend, clients, seconds, service)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def run(frontend: str, clients: int, seconds: float, service: str = "publish",
        timeout: float = 5.0, tries: int = 3, probe: bool = True) -> dict:
    """``clients`` threads sending back to back for ``seconds``. Each request is tried up
    to ``tries`` times with ``timeout`` per try and the same request id (as the C client
    and the bot do); its latency counts from the first try to the answer. ``probe=False``:
    no first probe, for a board known to be up (behind a round-robin relay with a server
    stopped, one probe in three meets the stopped one)."""
    # One quick probe first, so a missing board is one line, not three slow retries.
    if probe and ask_once(frontend, "channels", timeout=2.0) is None:
        raise NoBoard(f"no board answers at {frontend} (start one with 'bbd up', or give "
                      "--frontend / --base-port; --own-board measures a private one)")
    user = channel = BENCH_NAME
    try:
        with Client(frontend, timeout=5) as setup:
            setup.request("login", {"user": user})
            setup.request("channel", {"channel": channel})  # erro if it exists: fine
    except Unavailable as e:
        raise NoBoard(f"the board at {frontend} stopped answering: {e}") from None
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    timeouts = [0] * clients
    failed = [0] * clients
    stop = time.monotonic() + seconds

    def worker(k: int) -> None:
        c = Client(frontend, timeout=timeout, retries=1)
        n = 0
        while time.monotonic() < stop:
            n += 1
            data = {"user": user, "channel": channel, "message": f"m{k}-{n}"} \
                if service == "publish" else {}
            rid = uuid.uuid4().hex
            t0 = time.perf_counter()
            for _ in range(tries):
                try:
                    reply = c.request(service, data, rid=rid)
                    break
                except Unavailable:
                    timeouts[k] += 1
            else:
                failed[k] += 1
                continue
            latencies[k].append(time.perf_counter() - t0)
            if reply.get("status") == "erro":
                errors[k] += 1
        c.close()

    began = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    lat = [x for per in latencies for x in per]
    if not lat and sum(failed):
        raise NoBoard(f"the board at {frontend} stopped answering during the run")
    # Percentiles 1..99 (needs two samples; a run that short reports nothing useful).
    cuts = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [nan] * 99
    return {
        "service": service, "clients": clients, "requests": len(lat), "errors": sum(errors),
        "timeouts": sum(timeouts), "failed": sum(failed),
        "seconds": elapsed, "rate": len(lat) / elapsed,
        "p50_ms": cuts[49] * 1e3, "p90_ms": cuts[89] * 1e3, "p99_ms": cuts[98] * 1e3,
        "max_ms": max(lat) * 1e3 if lat else nan,
        "mean_ms": statistics.fmean(lat) * 1e3 if lat else nan,
    }


def line(r: dict) -> str:
    return (f"{r['service']:<8} clients={r['clients']:<3} requests={r['requests']:<6} "
            f"errors={r['errors']:<3} timeouts={r['timeouts']:<3} failed={r['failed']:<3} "
            f"rate={r['rate']:8.1f}/s  p50={r['p50_ms']:6.2f} ms  p90={r['p90_ms']:6.2f} ms  "
            f"p99={r['p99_ms']:7.2f} ms")
