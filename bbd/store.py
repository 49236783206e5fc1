"""Durable storage for one server's data directory (blocking I/O, no Twisted).

- ``journal.log``: the truth. One operation a line, appended and fsync'd in batches:
  ``<crc32 hex>|<json array>`` for an operation (its tuple: compact, and read back at C
  speed), ``<crc32 hex> <json object>`` for a map (any record; the only form written
  before, so a journal of either or both forms loads). A torn or corrupt tail (kill -9
  mid-write) is cut off at load: it was never acknowledged, because a reply waits for
  the fsync that covers its line. Damage in the middle costs only the damaged lines,
  which are moved aside to ``journal.damaged``.
- The four JSON files of PROTOCOL.md: derived views, kept by ``bbd.datafiles`` (extended
  in place behind an atomic rename; ``DataFiles`` is re-exported here).
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain, repeat
from pathlib import Path
from typing import IO, Any

import msgspec

from bbd.datafiles import DATA_FILES, DataFiles, fsync_dir

__all__ = ["DATA_FILES", "DataFiles", "Journal", "Loaded", "decode_record", "encode_record",
           "encode_records", "replacing", "write_bytes_atomic", "write_json_atomic"]

JOURNAL = "journal.log"
DAMAGED = "journal.damaged"  # damaged stretches of the journal, kept for a person to read
_BLOCK = 4 << 20  # bytes read at a time when loading the journal


@contextmanager
def replacing(path: Path, mode: str = "wb", **kw: Any) -> Iterator[IO[Any]]:
    """Write a new ``path`` atomically: a hidden file beside it, written by the caller,
    fsync'd, renamed over ``path``, and the directory fsync'd. Readers and a crash see
    the old file or the new one, never a half-written one; a failure leaves the old one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open(mode, **kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: Path, obj: Any) -> tuple[int, int, int]:
    """``obj`` as indented JSON, atomically. Returns the new file's signature, taken
    before the rename (which keeps it): a stat after the rename could already see a file
    someone else put there meanwhile."""
    with replacing(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")
        f.flush()
        st = os.fstat(f.fileno())
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with replacing(path) as f:
        f.write(data)


# Made once: json.dumps with any non-default argument builds a new encoder per call, which
# costs about as much as encoding a record. For what msgspec cannot encode (a lone
# surrogate, an integer beyond 64 bits).
_RECORD_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# Compact JSON in UTF-8, as the standard library's with the arguments above writes it but
# for the spelling of some floats (1e16, not 1e+16), at a fifth of its cost: a new server
# journals a million records as it catches up.
_encode_json = msgspec.json.Encoder().encode


# A line's head: its body's CRC, then what the body is.
_MAP, _ROW = b" ", b"|"
_FORMS = {_MAP: dict, _ROW: list}  # the JSON value each holds


def encode_record(record: dict[str, Any] | tuple[Any, ...]) -> bytes:
    """A journal line: a map (``<crc> {...}``), or a tuple (an operation) as a row
    (``<crc>|[...]``)."""
    form = _MAP if type(record) is dict else _ROW
    try:
        body = _encode_json(record)
    except (TypeError, ValueError, OverflowError):
        body = _RECORD_ENCODER.encode(record).encode("utf-8")
    return b"%08x%s%s\n" % (zlib.crc32(body), form, body)


def encode_records(records: list[Any]) -> bytes:
    """``encode_record`` of each, joined: for a batch of rows only (a catch-up's page),
    as C-level passes over the batch (per record in Python, the encoding of a million
    took seconds of the GIL)."""
    if dict in set(map(type, records)):
        return b"".join(map(encode_record, records))
    try:
        bodies = list(map(_encode_json, records))
    except (TypeError, ValueError, OverflowError):
        return b"".join(map(encode_record, records))
    heads = map((b"%08x" + _ROW).__mod__, map(zlib.crc32, bodies))
    return b"".join(chain.from_iterable(zip(heads, bodies, repeat(b"\n"))))


def decode_record(line: bytes) -> dict[str, Any] | list[Any] | None:
    """The record on a complete, intact line; None for a torn or corrupt one."""
    if not line.endswith(b"\n") or len(line) < 10:
        return None
    kind = _FORMS.get(line[8:9])
    body = line[9:-1]
    try:
        if kind is None or int(line[:8], 16) != zlib.crc32(body):
            return None
        record = json.loads(body)
    except ValueError:
        return None
    return record if type(record) is kind else None


@dataclass
class Loaded:
    """What ``Journal.load`` found: the intact records, the bytes of a torn tail it cut (a
    last record never acknowledged), and damaged stretches in the middle, as (offset,
    length) in the old file, that it moved aside to ``journal.damaged``."""

    records: list[dict[str, Any]]
    torn: int = 0
    damaged: list[tuple[int, int]] = field(default_factory=list)
    # How many records were maps (the earlier form): the caller may upgrade the journal.
    maps: int = field(default=0, compare=False)


class Journal:
    def __init__(self, directory: Path) -> None:
        self.path = directory / JOURNAL
        self.damaged_path = directory / DAMAGED
        self._fd: int | None = None

    def load(self, sink: Callable[[list[Any]], Any] | None = None,
             decode: Callable[[bytes], list[Any] | None] | None = None) -> Loaded:
        """Read every intact record. Each line carries its own CRC, so damage in the middle
        (a flipped byte, a bad sector) costs only the lines it touches: they are moved to
        ``journal.damaged`` and the journal is rewritten without them. Damage that runs to
        the end is a torn tail (a crash mid-write, never acknowledged) and is cut.

        The file is read in big blocks, and the records of a block are parsed by one call
        of the JSON decoder. With ``sink``, each block's records are handed to it as they
        are read (and ``Loaded.records`` stays empty), so that a start never holds the
        whole journal as dicts. With ``decode``, a block's records (as one JSON array of
        intact lines) are what it makes of them, unless it says None: then they are
        parsed as dicts as usual (so that a typed decoder may refuse what it would not
        take, and a caller still gets every record)."""
        if not self.path.exists():
            return Loaded([])
        records: list[dict[str, Any]] = []
        take = sink if sink is not None else records.extend
        bad: list[tuple[int, bytes]] = []  # (offset, line) not yet known to be the tail
        damaged: list[tuple[int, int]] = []
        aside: list[tuple[int, bytes]] = []
        offset = 0  # of the first byte not yet scanned
        maps = 0
        # A line begun in earlier blocks, joined once it ends: a long garbage tail without
        # newlines costs no quadratic copying.
        pieces: list[bytes] = []
        with self.path.open("rb") as f:
            while chunk := f.read(_BLOCK):
                pieces.append(chunk)
                if b"\n" not in chunk:
                    continue
                data = b"".join(pieces)
                lines = data.split(b"\n")
                rest = lines.pop()  # the start of a line that goes on in the next block
                pieces = [rest] if rest else []
                block = _parse_block(lines, decode)
                if block is not None:
                    if bad:  # good lines follow: the bad ones were damage in the middle
                        damaged.extend(_stretches(bad))
                        aside.extend(bad)
                        bad = []
                    if block and lines[0][8:9] == _MAP:
                        maps += len(block)
                    take(block)
                    offset += len(data) - len(rest)
                    continue
                good: list[dict[str, Any]] = []
                for line in lines:
                    full = line + b"\n"
                    record = decode_record(full)
                    if record is None:
                        bad.append((offset, full))
                    else:
                        if bad:
                            damaged.extend(_stretches(bad))
                            aside.extend(bad)
                            bad = []
                        good.append(record)
                        maps += type(record) is dict
                    offset += len(full)
                take(good)
        if pieces:  # a last line without its newline: torn
            bad.append((offset, b"".join(pieces)))
        size = self.path.stat().st_size
        torn = size - (bad[0][0] if bad else size)
        if damaged:
            self._set_aside(aside, damaged)
            self._rewrite_without(damaged, size - torn)
        elif torn:
            with self.path.open("r+b") as f:
                f.truncate(size - torn)
                os.fsync(f.fileno())
        return Loaded(records, torn, damaged, maps)

    def _set_aside(self, aside: list[tuple[int, bytes]], damaged: list[tuple[int, int]]) -> None:
        lines = dict(aside)
        with self.damaged_path.open("ab") as f:
            for start, length in damaged:
                f.write(b"# %d bytes from offset %d of %s\n" % (length, start, JOURNAL.encode()))
                at = start
                while at < start + length:
                    f.write(lines[at])
                    at += len(lines[at])
                f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())

    def _rewrite_without(self, damaged: list[tuple[int, int]], end: int) -> None:
        """Rewrite the journal up to ``end`` without the damaged stretches, atomically."""
        with self.path.open("rb") as src, replacing(self.path) as dst:
            at = 0
            for start, length in [*damaged, (end, 0)]:
                _copy(src, dst, at, start - at)
                at = start + length

    def rewrite(self, records: list[Any]) -> None:
        """Replace the (closed) journal by one holding ``records``, atomically: readers
        and a crash see the old journal or the new one. For an upgrade to the row form."""
        assert self._fd is None, "journal open"
        with replacing(self.path) as f:
            for at in range(0, len(records), 10_000):
                f.write(encode_records(records[at:at + 10_000]))

    def open(self) -> None:
        new = not self.path.exists()
        # Unbuffered: after a failed write no stale buffer may reach the file later.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if new:
            fsync_dir(self.path.parent)

    def append(self, records: list[dict[str, Any]]) -> None:
        """Write and fsync a batch; durable when this returns. If it fails (a full or
        broken disk), the journal is cut back to where the batch began, so that nothing
        the caller was told had failed can come back at the next start."""
        assert self._fd is not None, "journal not open"
        data = memoryview(encode_records(records))
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            while data:
                data = data[os.write(self._fd, data):]
            os.fsync(self._fd)
        except OSError:
            try:
                os.ftruncate(self._fd, start)
                os.fsync(self._fd)
            except OSError:
                pass  # the next start cuts the torn tail
            raise

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _parse_block(lines: list[bytes],
                 decode: Callable[[bytes], list[Any] | None] | None = None) -> list[Any] | None:
    """The records of complete lines (without their newlines) if every line is intact
    and all hold the same form, else None (the caller then goes line by line). Each
    line's head must be the CRC of its body as ``encode_record`` writes it (lower-case
    hex: another spelling goes the line-by-line way, which reads it), and its body one
    JSON object (a map) or array (a row). The checks run as C-level passes over the
    block, and the bodies are joined into one JSON array parsed in one call (by
    ``decode`` first, if given)."""
    if not lines:
        return []
    form = lines[0][8:9]
    kind = _FORMS.get(form)
    if kind is None:
        return None
    opener, closer = (b"{", b"}") if kind is dict else (b"[", b"]")
    bodies = [line[9:] for line in lines]
    heads = [line[:9] for line in lines]
    if heads != list(map((b"%08x" + form).__mod__, map(zlib.crc32, bodies))) \
            or not all(map(bytes.startswith, bodies, repeat(opener))) \
            or not all(map(bytes.endswith, bodies, repeat(closer))):
        return None
    array = b"[" + b",".join(bodies) + b"]"
    if decode is not None:
        records = decode(array)
        if records is not None and len(records) == len(bodies):
            return records
    try:
        records = json.loads(array)
    except ValueError:
        return None
    if len(records) != len(bodies) or not all(type(r) is kind for r in records):
        return None
    return records


def _copy(src: Any, dst: Any, start: int, length: int) -> None:
    src.seek(start)
    while length > 0:
        data = src.read(min(length, _BLOCK))
        if not data:
            break
        dst.write(data)
        length -= len(data)


def _stretches(bad: list[tuple[int, bytes]]) -> list[tuple[int, int]]:
    """Consecutive bad lines as (offset, length) stretches."""
    out: list[tuple[int, int]] = []
    for offset, line in bad:
        if out and out[-1][0] + out[-1][1] == offset:
            out[-1] = (out[-1][0], out[-1][1] + len(line))
        else:
            out.append((offset, len(line)))
    return out
