"""``python -m bbd.footprint``: memory and CPU of each daemon, idle and under write load,
and how long a server takes to stop on SIGTERM. The numbers behind the resource requests,
limits and grace period of deploy/kubernetes (see docs/kubernetes.md).

Reads /proc (Linux): resident memory (VmRSS), its peak (VmHWM) and CPU time (utime +
stime) of each ``twistd`` process of a local three-server cluster, its dashboard (with one
page open on its event stream) and one bot, the servers serving Prometheus metrics as
they do in deploy/kubernetes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bbd import bench
from bbd.dashboard_cost import OpenPage, _free_port
from bbd.launcher import bot_argv
from bbd.localcluster import Cluster, _free_block


@dataclass(frozen=True)
class Sample:
    rss_kib: int
    peak_kib: int
    cpu_s: float


def parse_status(text: str) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB from /proc/PID/status."""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def parse_cpu(stat: str, ticks_per_s: int) -> float:
    """utime + stime in seconds from /proc/PID/stat (fields 14 and 15; the command name,
    field 2, is in parentheses and may hold spaces, so count from its closing one)."""
    after = stat[stat.rindex(")") + 2:].split()
    return (int(after[11]) + int(after[12])) / ticks_per_s


def sample(pid: int) -> Sample:
    proc = Path("/proc") / str(pid)
    rss, peak = parse_status((proc / "status").read_text())
    return Sample(rss, peak, parse_cpu((proc / "stat").read_text(), os.sysconf("SC_CLK_TCK")))


def millicores(before: Sample, after: Sample, seconds: float) -> float:
    return 1000 * (after.cpu_s - before.cpu_s) / seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bbd.footprint")
    p.add_argument("--idle", type=float, default=10.0, help="seconds measured idle")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds of write load")
    p.add_argument("--clients", type=int, default=16)
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bbd-footprint-"))
    cluster = Cluster(root, servers=3)
    cluster.layout.dashboard = _free_port()
    cluster.layout.metrics_base = _free_block(3)
    bot = page = None
    try:
        cluster.start()
        cluster.spawn("dashboard")
        cluster.wait_up(["dashboard"])
        page = OpenPage(f"http://127.0.0.1:{cluster.layout.dashboard}/events")
        pids = {name: proc.pid for name, proc in cluster.procs.items()}
        argv_bot = bot_argv(cluster.layout, 3.0)
        if argv_bot:
            bot = subprocess.Popen(argv_bot, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            pids["bot (interval 3 s)"] = bot.pid
        applied0 = cluster.status(cluster.names()[0])["applied"]
        t0 = {n: sample(pid) for n, pid in pids.items()}
        time.sleep(args.idle)  # a measurement window, not a wait for readiness
        t1 = {n: sample(pid) for n, pid in pids.items()}
        out = bench.run(cluster.frontend, args.clients, args.seconds)
        t2 = {n: sample(pid) for n, pid in pids.items()}
        applied = cluster.status(cluster.names()[0])["applied"] - applied0
        # One scrape of every /metrics page, as Prometheus would: they answer, and how big.
        scraped = []
        for name, port in cluster.layout.web_ports():
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as answer:
                scraped.append(f"{name} {len(answer.read()) / 1024:.1f} KiB")
        print(f"load: {bench.line(out)}")
        print(f"{'process':<20} {'RSS idle':>9} {'RSS load':>9} {'peak':>9} "
              f"{'CPU idle':>10} {'CPU load':>10}")
        for n in pids:
            print(f"{n:<20} {t1[n].rss_kib / 1024:7.1f}Mi {t2[n].rss_kib / 1024:7.1f}Mi "
                  f"{t2[n].peak_kib / 1024:7.1f}Mi "
                  f"{millicores(t0[n], t1[n], args.idle):8.0f}m "
                  f"{millicores(t1[n], t2[n], out['seconds']):8.0f}m")
        print(f"one scrape of /metrics: {', '.join(scraped)}; the open page received "
              f"{page.bytes / 1024:.0f} KiB of events")
        grown = [t2[n].rss_kib - t1[n].rss_kib for n in cluster.names()]
        if applied > 0:
            per_k = max(grown) * 1024 / applied
            print(f"server memory growth: {max(grown) / 1024:.1f} MiB for {applied} "
                  f"operations, about {per_k / 1024:.2f} KiB each "
                  f"({per_k * 1000 / 2**20:.1f} MiB per 1000)")
        for name in cluster.names():
            proc = cluster.procs[name]
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            took = time.monotonic() - began
            log = (cluster.data_dir(name) / "twistd.log").read_text()
            clean = "journal closed, files written" if f"{name} stopped" in log \
                else "NO clean stop in its log"
            print(f"{name}: SIGTERM to exit {took:.2f} s (exit code {proc.returncode}, "
                  f"{clean})")
    finally:
        if page is not None:
            page.close()
        if bot is not None:
            bot.terminate()
            bot.wait(10)
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
