"""The four JSON data files of PROTOCOL.md, extended in place at a cost independent of history.

Each file is a JSON array with one entry a line, in compact JSON (``[\\n{..},\\n{..}\\n]\\n``),
so that the bytes of entry ``i`` are the same whatever comes after it. A write cuts the file
where the first changed entry starts, writes the entries from there on and the closing
bracket: appending 100 posts writes 100 lines, whatever the history.

Readers must never see a half-written array, so the visible name is never written to. Each
file is a ring of ``RING`` inodes under hidden names (``.publicacoes.json.0`` ..), and the
visible name is a hard link to one of them, swapped by ``rename``. A flush brings the least
recently visible inode up to date (copying, in the kernel, the entries of the last flushes
from the visible one, then writing the new ones), fsyncs it and makes it visible. An inode
is modified only ``RING - 1`` flushes after it stopped being visible: that is the grace a
reader holding a file open has (two snapshot intervals, 1.5 s by default).

One array of byte offsets per file (8 bytes an entry) serves every inode of its ring.
Nothing here ever reads back what it wrote, except for the in-kernel copy between inodes.

Threads: ``take`` runs on the reactor and costs O(entries changed since the last take);
``apply`` (rendering, writing, fsync) runs in a thread.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

import msgspec

from bbd.opkinds import DATA_FILES, KINDS
from bbd.state import Board, _Sorted, entry, user_entry

RING = 3
HEAD = b"[\n"
SEP = b",\n"

Signature = tuple[int, int, int]


_encode = msgspec.json.Encoder().encode


def tail(n: int) -> bytes:
    return b"\n]\n" if n else b"]\n"


def render_array(lines: Iterable[bytes]) -> bytes:
    """The whole file for these entry lines: what the ring's visible file always equals."""
    lines = list(lines)
    return HEAD + SEP.join(lines) + tail(len(lines))


def line(entry: Any) -> bytes:
    # json.dumps(entry, ensure_ascii=False, separators=(",", ":")), UTF-8: the same bytes
    # for an entry, from msgspec's C encoder (the journal's), with less time holding the
    # GIL the reactor needs.
    return _encode(entry)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def signature(path: Path) -> Signature | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _fd_signature(fd: int) -> Signature:
    st = os.fstat(fd)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _copy(src: int, dst: int, start: int, end: int) -> None:
    """Bytes [start, end) of ``src`` to the same place in ``dst``: in the kernel where it
    can (copy_file_range), else through a buffer."""
    pos = start
    while pos < end:
        try:
            n = os.copy_file_range(src, dst, end - pos, pos, pos)
        except OSError as e:
            if e.errno not in (errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            n = 0
        if n == 0:  # unsupported here, or the source is shorter than we think
            data = os.pread(src, min(end - pos, 1 << 20), pos)
            if not data:
                raise OSError(errno.EIO, f"source inode ends at {pos}, expected {end}")
            _write_at(dst, data, pos)
            n = len(data)
        pos += n


class NeedsRebuild(Exception):
    """The inode to copy from is not what we left: the file must be rendered in full."""


class RingFile:
    """One data file: its ring of inodes and where each entry's line starts."""

    def __init__(self, directory: Path, name: str, ring: int = RING) -> None:
        self.directory = directory
        self.name = name
        self.path = directory / name
        self.inodes = [directory / f".{name}.{k}" for k in range(ring)]
        self._link = directory / f".{name}.link"
        # offsets[i]: where entry i's chunk starts (entry i > 0 is preceded by ",\n");
        # offsets[n]: where the closing bracket starts. Same in every inode.
        self.offsets = array("q", [len(HEAD)])
        self.valid = [-1] * ring  # entries inode k holds correctly (-1: nothing known)
        self.sigs: list[Signature | None] = [None] * ring  # each inode as we left it
        self.visible = -1  # the inode under the visible name, as far as we made it so
        self.published: Signature | None = None  # the visible name after our rename

    @property
    def count(self) -> int:
        return len(self.offsets) - 1

    def forget(self) -> None:
        """Trust no inode any more (a foreign change, a start): the next update renders
        the file in full."""
        self.offsets = array("q", [len(HEAD)])
        self.valid = [-1] * len(self.inodes)

    def update(self, lo: int, lines: list[bytes]) -> bool:
        """Make the visible file hold the entries it held below ``lo`` followed by
        ``lines``. False if nothing had to change. NeedsRebuild if entries below ``lo``
        are not known here any more."""
        n_old = self.count
        if lo > n_old:
            raise NeedsRebuild(f"{self.name}: entry {lo} asked, {n_old} known")
        if (not lines and lo == n_old and self.visible >= 0
                and self.valid[self.visible] == n_old):
            return False
        del self.offsets[lo + 1:]
        self.valid = [min(v, lo) for v in self.valid]
        pos = self.offsets[lo]
        chunks = []
        for i, text in enumerate(lines, lo):
            chunk = SEP + text if i else text
            chunks.append(chunk)
            pos += len(chunk)
            self.offsets.append(pos)
        n = self.count
        k = (self.visible + 1) % len(self.inodes)
        have = self._trusted(k)
        self.valid[k] = -1  # until it is whole again
        if have < 0:  # written from scratch: in a new inode, never in one a reader may hold
            self.inodes[k].unlink(missing_ok=True)
        fd = os.open(self.inodes[k], os.O_RDWR | os.O_CREAT, 0o644)
        try:
            start = 0 if have < 0 else self.offsets[have]
            os.ftruncate(fd, start)
            if have < lo:
                if lo == 0:
                    _write_at(fd, HEAD, 0)
                else:
                    self._copy_from_visible(fd, start, self.offsets[lo], lo)
            _write_at(fd, b"".join(chunks) + tail(n), self.offsets[lo])
            os.fsync(fd)
            self.valid[k], self.sigs[k] = n, _fd_signature(fd)
        finally:
            os.close(fd)
        self._link.unlink(missing_ok=True)
        os.link(self.inodes[k], self._link)
        os.replace(self._link, self.path)
        self.visible = k
        self.published = signature(self.path)
        return True

    def _trusted(self, k: int) -> int:
        """The entries inode ``k`` holds, if it is still the inode we left; else -1."""
        if self.valid[k] < 0 or signature(self.inodes[k]) != self.sigs[k]:
            return -1
        return self.valid[k]

    def _copy_from_visible(self, dst: int, start: int, end: int, lo: int) -> None:
        src_k = self.visible
        if src_k < 0 or self.valid[src_k] < lo:
            raise NeedsRebuild(f"{self.name}: no inode holds the first {lo} entries")
        src = os.open(self.inodes[src_k], os.O_RDONLY)
        try:
            if _fd_signature(src) != self.sigs[src_k]:
                self.valid[src_k] = -1
                raise NeedsRebuild(f"{self.name}: inode {src_k} changed behind our back")
            _copy(src, dst, start, end)
        finally:
            os.close(src)


# -- what a flush takes from the board (on the reactor) --------------------------------

# The sorted Board view behind each file (users: by first login), and the files whose
# entries are users, each listing its logins (bbd/opkinds.py).
VIEWS: dict[str, Callable[[Board], _Sorted]] = {
    k.data_file: attrgetter(k.view) for k in KINDS.values()}
BY_USER = frozenset(k.data_file for k in KINDS.values() if k.by_user)


def _slice(board: Board, name: str, lo: int) -> list[Any]:
    """Items from ``lo`` on: list copies of references to immutable ops (C speed); a
    user's entry also takes a copy of its logins."""
    items = VIEWS[name](board).items[lo:]
    if name in BY_USER:
        logins = board.user_logins
        return [logins[op.fields["user"]].items[:] for op in items]
    return items


def render_lines(name: str, items: list[Any]) -> list[bytes]:
    if name in BY_USER:
        return [line(user_entry(logins)) for logins in items]
    return [line(entry(op, rid=True)) for op in items]


@dataclass(frozen=True)
class Batch:
    serial: int
    parts: dict[str, tuple[int, list[Any]]]  # file -> (first changed index, items from it)


class DataFiles:
    """The four files, with memory of what this process itself wrote."""

    def __init__(self, directory: Path, ring: int = RING) -> None:
        self.directory = directory
        self.rings = {name: RingFile(directory, name, ring) for name in DATA_FILES}
        # Writers run in threads (the periodic flush, the last one at stop): one at a time.
        self._lock = threading.Lock()
        # Entries handed to a batch and not yet known written, per file: the lowest index,
        # and the batch that handed it out. Every file starts owed in full.
        self._marks = threading.Lock()
        self._owed: dict[str, int | None] = dict.fromkeys(DATA_FILES, 0)
        self._owed_by: dict[str, int] = dict.fromkeys(DATA_FILES, -1)
        self._serial = 0
        self._applied = 0

    def pending(self) -> bool:
        """Whether some file must be written even if the board did not change."""
        with self._marks:
            return any(v is not None for v in self._owed.values())

    def take(self, board: Board) -> Batch:
        """On the reactor: what changed in each view since the last take, as the index it
        changed from and the items from there on (O(changed entries))."""
        parts = {}
        with self._marks:
            self._serial += 1
            for name in DATA_FILES:
                view = VIEWS[name](board)
                lo = view.take_changed()
                owed = self._owed[name]
                if owed is not None:
                    lo = min(lo, owed)
                self._owed[name], self._owed_by[name] = lo, self._serial
                parts[name] = (lo, _slice(board, name, lo))
            return Batch(self._serial, parts)

    def apply(self, batch: Batch) -> None:
        """In a thread: render and write a batch. A batch older than one already applied
        is skipped (the later one covers it). On an error the entries stay owed and the
        next batch writes them again."""
        with self._lock:
            if batch.serial < self._applied:
                return
            self._applied = batch.serial
            done, wrote = [], False
            try:
                for name, (lo, items) in batch.parts.items():
                    try:
                        wrote |= self.rings[name].update(lo, render_lines(name, items))
                    except NeedsRebuild:
                        self._owe_in_full(name)
                        continue
                    done.append(name)
            finally:
                if wrote:
                    fsync_dir(self.directory)
            with self._marks:
                for name in done:
                    if self._owed_by[name] == batch.serial:
                        self._owed[name] = None

    def _owe_in_full(self, name: str) -> None:
        self.rings[name].forget()
        with self._marks:
            self._owed[name], self._owed_by[name] = 0, -1

    def write(self, contents: dict[str, list[dict[str, Any]]]) -> None:
        """Rewrite the files in full with these entries (not the board's: the next batch
        renders the board's in full again)."""
        with self._lock:
            for name in DATA_FILES:
                ring = self.rings[name]
                ring.forget()
                ring.update(0, [line(e) for e in contents.get(name, [])])
                with self._marks:
                    self._owed[name], self._owed_by[name] = 0, -1
            fsync_dir(self.directory)

    def changed_by_others(self) -> dict[str, Any]:
        """Files whose signature differs from our last write, parsed; unreadable ones are
        skipped (a half-copied backup is tried again on the next round). A changed or
        removed file is written again in full at the next flush."""
        out: dict[str, Any] = {}
        # Under the writers' lock: a file between our rename and the record of its new
        # signature would look changed by someone else, and we would reload our own write.
        with self._lock:
            for name, ring in self.rings.items():
                sig = signature(ring.path)
                if sig == ring.published:
                    continue
                if sig is None:  # removed: put it back
                    ring.published = None
                    self._owe_in_full(name)
                    continue
                try:
                    out[name] = json.loads(ring.path.read_bytes())
                except (OSError, ValueError):
                    continue
                ring.published = sig
                self._owe_in_full(name)
        return out
