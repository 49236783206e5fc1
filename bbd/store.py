"""Durable storage for one server's data directory (blocking I/O, no Twisted).

- ``journal.log``: the truth. One operation a line, ``<crc32 hex> <json>``, appended and
  fsync'd in batches. A torn or corrupt tail (kill -9 mid-write) is cut off at load: it was
  never acknowledged, because a reply waits for the fsync that covers its line.
- The four JSON files of PROTOCOL.md: derived views, rewritten atomically (temporary file,
  fsync, rename) and remembered by their stat signature, so that a file changed by someone
  else (a restored backup) can be noticed and merged.
"""

from __future__ import annotations

import json
import os
import threading
import zlib
from pathlib import Path
from typing import Any

DATA_FILES = ("usuarios.json", "canais.json", "publicacoes.json", "mensagens.json")
JOURNAL = "journal.log"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj: Any) -> tuple[int, int, int]:
    """Readers see the old file or the new one, never a half-written one. Returns the new
    file's signature, taken before the rename (which keeps it): a stat after the rename
    could already see a file someone else put there meanwhile."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
            st = os.fstat(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def encode_record(record: dict[str, Any]) -> bytes:
    body = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode_record(line: bytes) -> dict[str, Any] | None:
    """The record on a complete, intact line; None for a torn or corrupt one."""
    if not line.endswith(b"\n") or len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        record = json.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


class Journal:
    def __init__(self, directory: Path) -> None:
        self.path = directory / JOURNAL
        self._file = None

    def load(self) -> tuple[list[dict[str, Any]], int]:
        """All intact records, and how many bytes of damaged tail were cut off."""
        records: list[dict[str, Any]] = []
        good = 0
        size = 0
        if self.path.exists():
            with self.path.open("rb") as f:
                for line in f:
                    record = decode_record(line)
                    if record is None:
                        break
                    records.append(record)
                    good += len(line)
            size = self.path.stat().st_size
            if size > good:
                with self.path.open("r+b") as f:
                    f.truncate(good)
                    os.fsync(f.fileno())
        return records, size - good

    def open(self) -> None:
        new = not self.path.exists()
        self._file = self.path.open("ab")
        if new:
            _fsync_dir(self.path.parent)

    def append(self, records: list[dict[str, Any]]) -> None:
        """Write and fsync a batch; durable when this returns."""
        assert self._file is not None, "journal not open"
        self._file.write(b"".join(encode_record(r) for r in records))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class DataFiles:
    """The four JSON files, with memory of what this process itself wrote."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._written: dict[str, tuple[int, int, int] | None] = {}
        # Writers run in threads (the periodic snapshot, the last one at shutdown): one at
        # a time, since they share the temporary file names.
        self._lock = threading.Lock()

    def write(self, contents: dict[str, list[dict[str, Any]]]) -> None:
        with self._lock:
            for name in DATA_FILES:
                path = self.directory / name
                self._written[name] = write_json_atomic(path, contents.get(name, []))

    def changed_by_others(self) -> dict[str, Any]:
        """Files whose signature differs from our last write, parsed; unreadable ones are
        skipped (a half-copied backup is tried again on the next round)."""
        out: dict[str, Any] = {}
        for name in DATA_FILES:
            path = self.directory / name
            sig = _signature(path)
            if sig is None or sig == self._written.get(name):
                continue
            try:
                out[name] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            self._written[name] = sig
        return out
