"""Where a server's CPU goes under load: py-spy (``--gil``: only samples holding the GIL)
on one server of a three-server board while 16 clients publish, then a summary.

    python -m bbd.cpuprofile [--seconds 8] [--clients 16] [--raw FILE]

Prints the publish rate and CPU per operation per server (as ``bbd.scalebench``), then
the functions by inclusive share of the samples and by own share, and the shares of a few
known costs (the log observer, the journal's thread hand-off, enum flags, codecs).
py-spy needs to read another process's memory: run as root or with ptrace allowed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bbd.scalebench import Setup, measure

# Substrings of a stack, each the mark of one known cost.
KNOWN = {
    "log lines (Logger.emit)": "Logger.emit",
    "group commit (write, fsync and its waiters)": "GroupCommit._commit",
    "enum flags (EnumType.__call__)": "EnumType.__call__",
    "msgpack.packb (a new Packer per message)": "packb",
    "json": "json/",
    "Deferred callbacks": "Deferred._runCallbacks",
}


def summarise(raw: Path, top: int = 30) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    known: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [re.sub(r" \((?:.*/)?([^/]*?)(?:\.py)?(?::\d+)?\)$", r" (\1)", f)
                  for f in stack.split(";")]
        for name in set(frames):
            inclusive[name] += n
        own[frames[-1]] += n
        for label, mark in KNOWN.items():
            if mark in stack:
                known[label] += n
    if not total:
        return "no samples"
    out = [f"{total} samples holding the GIL", "-- known costs (inclusive)"]
    out += [f"{100 * known[k] / total:5.1f}%  {k}" for k in KNOWN]
    out.append("-- inclusive")
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    out.append("-- own")
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bbd.cpuprofile",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--raw", type=Path, help="keep py-spy's raw (collapsed) stacks here")
    args = p.parse_args(argv)
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        sys.exit("py-spy not found: make install (it is a test dependency)")
    root = Path(tempfile.mkdtemp(prefix="bbd-cpuprofile-"))
    raw = args.raw or root / "profile.txt"
    setup = Setup("3 servers", root / "board", 3, 0).start()
    try:
        measure(setup, args.clients, 2, 4)  # warm-up
        recorder = subprocess.Popen(
            [spy, "record", "--gil", "--format", "raw", "--rate", "200", "--duration",
             str(int(args.seconds)), "--pid", str(setup.pids()[0]), "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)  # py-spy attached
        result = measure(setup, args.clients, args.seconds, 4)
        _, err = recorder.communicate(timeout=60)
    finally:
        setup.stop()
    print(f"{result['rate']:.0f} publish/s with {args.clients} clients, "
          f"{result['cpu_ms_per_op']:.2f} ms CPU per op per server")
    print(summarise(raw) if raw.exists() else f"py-spy failed: {err.strip()}")
    if args.raw is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
