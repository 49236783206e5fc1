"""Microbenchmark of the data files: one flush of 100 new posts on top of 0, 100,000 and
1,000,000 stored posts, the old full rewrite against the ring of inodes extended in place.

    python -m bbd.filebench [--sizes 0 100000 1000000] [--new 100] [--dir DIR]

For each history size it builds a board, then alternates rounds of: 100 new posts, one old
flush (copy the views, render them, ``json.dump(indent=1)`` to temporary files, fsync,
rename) and one new flush (``take`` on the reactor, ``apply`` in the thread), each in its
own directory. It prints the time and the bytes written per flush, side by side. Runs in a
temporary directory under ``--dir`` (default: the system's, ``TMPDIR``); on a tmpfs the
fsyncs cost nothing, so point it at a real disk there.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bbd import datafiles
from bbd.datafiles import DATA_FILES, DataFiles
from bbd.state import Board, Op
from bbd.store import write_json_atomic

USERS, CHANNELS = 100, 10


class Written:
    """Bytes written by this process through pwrite and write, and copied in the kernel."""

    def __init__(self) -> None:
        self.wrote = self.copied = 0
        self._pwrite, self._copy = os.pwrite, os.copy_file_range

    def __enter__(self) -> Written:
        def pwrite(fd: int, data: Any, offset: int) -> int:
            n = self._pwrite(fd, data, offset)
            self.wrote += n
            return n

        def copy(src: int, dst: int, count: int, *args: Any) -> int:
            n = self._copy(src, dst, count, *args)
            self.copied += n
            return n

        datafiles.os.pwrite, datafiles.os.copy_file_range = pwrite, copy
        return self

    def __exit__(self, *_: Any) -> None:
        datafiles.os.pwrite, datafiles.os.copy_file_range = self._pwrite, self._copy


class Maker:
    def __init__(self) -> None:
        self.seq = 0

    def __call__(self, kind: str, **fields: str) -> Op:
        self.seq += 1
        return Op("s1", self.seq, self.seq, kind, 1.7e9 + self.seq / 1000, fields,
                  f"r{self.seq}")

    def post(self) -> Op:
        n = self.seq
        return self(kind="publish", user=f"user{n % USERS}", channel=f"canal{n % CHANNELS}",
                    message=f"message {n:07d} with sixty characters or so, ação ok.....")


def build(size: int) -> tuple[Board, Maker]:
    board, make = Board("s1"), Maker()
    for i in range(USERS):
        board.apply(make("login", user=f"user{i}"))
    for i in range(CHANNELS):
        board.apply(make("channel", channel=f"canal{i}"))
    for _ in range(size):
        board.apply(make.post())
    return board, make


def old_flush(board: Board, directory: Path) -> None:
    """What the server did before: copy every view, render every entry, rewrite it all."""
    contents = board.views().render()
    for name in DATA_FILES:
        write_json_atomic(directory / name, contents[name])


def new_flush(files: DataFiles, board: Board) -> float:
    """The flush of the server now; returns the seconds spent on the reactor (``take``)."""
    t0 = time.perf_counter()
    batch = files.take(board)
    reactor = time.perf_counter() - t0
    files.apply(batch)
    return reactor


def _size(directory: Path) -> int:
    return sum((directory / name).stat().st_size for name in DATA_FILES)


def measure(size: int, new: int, rounds: int, base: Path, say: Callable[[str], None]) -> dict:
    t0 = time.perf_counter()
    board, make = build(size)
    say(f"  board of {size:,} posts built in {time.perf_counter() - t0:.1f} s")
    old_dir, new_dir = base / f"old-{size}", base / f"new-{size}"
    old_dir.mkdir()
    new_dir.mkdir()
    files = DataFiles(new_dir)
    gc.collect()
    t0 = time.perf_counter()
    new_flush(files, board)  # a start: rendered once in full
    start = time.perf_counter() - t0
    for _ in range(datafiles.RING - 1):  # every inode of the ring filled, as after 2 s
        for _ in range(new):
            board.apply(make.post())
        new_flush(files, board)
    old_times, new_times, reactor_times, new_bytes, copied = [], [], [], [], []
    old_bytes = 0
    for _ in range(rounds):
        for _ in range(new):
            board.apply(make.post())
        gc.collect()  # the garbage of one flush is not charged to the other
        t0 = time.perf_counter()
        old_flush(board, old_dir)
        old_times.append(time.perf_counter() - t0)
        old_bytes = _size(old_dir)
        gc.collect()
        with Written() as w:
            t0 = time.perf_counter()
            reactor_times.append(new_flush(files, board))
            new_times.append(time.perf_counter() - t0)
        new_bytes.append(w.wrote)
        copied.append(w.copied)
    say(f"  {size:,} done")
    return {"size": size, "old_s": statistics.median(old_times), "old_bytes": old_bytes,
            "new_s": statistics.median(new_times), "reactor_s": statistics.median(reactor_times),
            "new_bytes": statistics.median(new_bytes), "copied": statistics.median(copied),
            "start_s": start}


def table(rows: list[dict], new: int) -> str:
    out = [f"one flush of {new} new posts (medians)",
           "| stored posts | old: time | old: bytes written | new: time | new: on the reactor "
           "| new: bytes written | new: copied in kernel | old/new time | new: first full "
           "render |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(
            f"| {r['size']:,} | {r['old_s'] * 1000:,.1f} ms | {r['old_bytes']:,} "
            f"| {r['new_s'] * 1000:,.2f} ms | {r['reactor_s'] * 1e6:,.0f} µs "
            f"| {int(r['new_bytes']):,} | {int(r['copied']):,} "
            f"| {r['old_s'] / r['new_s']:,.0f}x | {r['start_s']:.2f} s |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[0, 100_000, 1_000_000])
    p.add_argument("--new", type=int, default=100, help="posts added before each flush")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dir", type=Path, default=None, help="where to write (a real disk)")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="filebench-", dir=args.dir) as tmp:
        for size in args.sizes:
            rows.append(measure(size, args.new, args.rounds, Path(tmp), print))
    print(table(rows, args.new))


if __name__ == "__main__":
    main()
