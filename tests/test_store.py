"""bbd.store: the crc-checked journal, atomic JSON writes and foreign-change detection."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import pytest

from bbd import store
from bbd.store import DATA_FILES, DataFiles, Journal, Loaded, decode_record, encode_record

RECORDS = [{"origin": "s1", "seq": i, "text": f"olá {i}", "n": [i, None]} for i in range(1, 6)]


@pytest.fixture(params=[None, 1, 50], ids=["one block", "1-byte blocks", "50-byte blocks"])
def block(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Load the journal in blocks of several sizes: lines then span block boundaries."""
    if request.param is not None:
        monkeypatch.setattr(store, "_BLOCK", request.param)


def write_journal(directory: Path, records: list[dict]) -> Journal:
    j = Journal(directory)
    j.open()
    j.append(records[:2])
    j.append(records[2:])
    j.close()
    return j


def test_record_round_trip() -> None:
    line = encode_record(RECORDS[0])
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and line[8:9] == b" "
    assert decode_record(line) == RECORDS[0]


@pytest.mark.parametrize("line", [
    b"", b"\n", b"0000 {}\n", b"zzzzzzzz {}\n",
    encode_record({"a": 1})[:-1],                                  # no newline: torn
    encode_record({"a": 1})[:-5] + b"\n",                          # body cut short
    encode_record({"a": 1}).replace(b"1", b"2"),                   # body changed
    b"%08x %s\n" % (0, b'{"a":1}'),                               # wrong crc
    encode_record({"a": 1})[:8] + b"_" + encode_record({"a": 1})[9:],
    b"%08x [1]\n" % zlib.crc32(b"[1]"),             # crc ok, not a map
    b"%08x \xff\xfe\n" % zlib.crc32(b"\xff\xfe"),   # crc ok, not UTF-8
])
def test_decode_record_rejects_damaged_lines(line: bytes) -> None:
    assert decode_record(line) is None


@pytest.mark.usefixtures("block")
def test_journal_round_trip_and_reopen_appends(tmp_path: Path) -> None:
    j = write_journal(tmp_path, RECORDS)
    assert j.load() == Loaded(RECORDS)
    j.open()
    j.append([{"more": True}])
    j.close()
    assert Journal(tmp_path).load() == Loaded(RECORDS + [{"more": True}])


def test_empty_or_absent_journal(tmp_path: Path) -> None:
    assert Journal(tmp_path).load() == Loaded([])
    (tmp_path / store.JOURNAL).write_bytes(b"")
    assert Journal(tmp_path).load() == Loaded([])


def test_append_before_open_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AssertionError):
        Journal(tmp_path).append([{"a": 1}])


def _torn(raw: bytes, last: int) -> bytes:
    return raw[: last + (len(raw) - last) // 2]


def _bad_crc(raw: bytes, last: int) -> bytes:
    return raw[:last] + (b"0" if raw[last:last + 1] != b"0" else b"1") + raw[last + 1:]


def _flipped_body(raw: bytes, last: int) -> bytes:
    return raw[:-3] + bytes([raw[-3] ^ 1]) + raw[-2:]


def _garbage(raw: bytes, last: int) -> bytes:
    return raw + b"\x00\xff garbage without newline"


def _garbage_lines(raw: bytes, last: int) -> bytes:
    return raw + b"not a record\nnor this\n"


@pytest.mark.parametrize("damage,kept", [
    (_torn, 4), (_bad_crc, 4), (_flipped_body, 4), (_garbage, 5), (_garbage_lines, 5),
], ids=["torn last line", "bad crc", "flipped body byte", "garbage tail", "garbage lines"])
@pytest.mark.usefixtures("block")
def test_damaged_tail_is_cut_at_load(tmp_path: Path, damage, kept: int) -> None:
    write_journal(tmp_path, RECORDS)
    path = tmp_path / store.JOURNAL
    raw = path.read_bytes()
    last = raw.rstrip(b"\n").rfind(b"\n") + 1  # start of the last record
    good_size = last if kept == 4 else len(raw)
    damaged = damage(raw, last)
    path.write_bytes(damaged)

    loaded = Journal(tmp_path).load()
    assert loaded.records == RECORDS[:kept] and loaded.damaged == []
    assert loaded.torn == len(damaged) - good_size > 0
    assert path.read_bytes() == raw[:good_size]  # the file itself was truncated
    assert Journal(tmp_path).load() == Loaded(RECORDS[:kept])
    assert not (tmp_path / store.DAMAGED).exists()

    j = Journal(tmp_path)  # appending after the cut gives a clean journal
    j.open()
    j.append([{"new": 1}])
    j.close()
    assert Journal(tmp_path).load() == Loaded(RECORDS[:kept] + [{"new": 1}])


def _flip_in_line(raw: bytes, line: int) -> tuple[bytes, int, int]:
    """Flip one body byte of record ``line``: (damaged journal, offset, length of line)."""
    starts = [0] + [i + 1 for i, b in enumerate(raw) if b == 10][:-1]
    start = starts[line]
    end = raw.index(b"\n", start) + 1
    middle = start + 20
    return raw[:middle] + bytes([raw[middle] ^ 0x20]) + raw[middle + 1:], start, end - start


@pytest.mark.parametrize("line", [0, 2, 3])
@pytest.mark.usefixtures("block")
def test_damage_in_the_middle_keeps_every_good_record(tmp_path: Path, line: int) -> None:
    write_journal(tmp_path, RECORDS)
    path = tmp_path / store.JOURNAL
    raw = path.read_bytes()
    damaged, offset, length = _flip_in_line(raw, line)
    path.write_bytes(damaged)

    loaded = Journal(tmp_path).load()
    assert loaded.records == RECORDS[:line] + RECORDS[line + 1:]
    assert loaded.damaged == [(offset, length)] and loaded.torn == 0
    aside = (tmp_path / store.DAMAGED).read_bytes()
    assert damaged[offset:offset + length] in aside and b"offset %d" % offset in aside
    # The journal no longer holds the damaged line, and stays appendable.
    assert Journal(tmp_path).load() == Loaded(RECORDS[:line] + RECORDS[line + 1:])
    j = Journal(tmp_path)
    j.open()
    j.append([{"new": 1}])
    j.close()
    assert Journal(tmp_path).load().records[-1] == {"new": 1}


@pytest.mark.usefixtures("block")
def test_a_newline_flipped_in_the_middle_costs_only_the_two_lines_it_joins(
        tmp_path: Path) -> None:
    write_journal(tmp_path, RECORDS)
    path = tmp_path / store.JOURNAL
    raw = path.read_bytes()
    first_end = raw.index(b"\n")
    path.write_bytes(raw[:first_end] + b"X" + raw[first_end + 1:])
    loaded = Journal(tmp_path).load()
    assert loaded.records == RECORDS[2:]
    assert len(loaded.damaged) == 1 and loaded.damaged[0][0] == 0


@pytest.mark.usefixtures("block")
def test_load_hands_the_records_to_a_sink_block_by_block(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_journal(tmp_path, RECORDS)
    monkeypatch.setattr(store, "_BLOCK", 150)
    blocks: list[list[dict]] = []
    loaded = Journal(tmp_path).load(blocks.append)
    assert loaded == Loaded([])  # nothing kept: the sink had them
    assert len([b for b in blocks if b]) > 1
    assert [r for b in blocks for r in b] == RECORDS


@pytest.mark.usefixtures("block")
@pytest.mark.parametrize("body", [b'{"a":1},{"b":2}', b"[1]", b"{}]", b"{", b""])
def test_a_crc_intact_line_that_is_not_one_object_is_damage(tmp_path: Path,
                                                            body: bytes) -> None:
    """Records are parsed a block at a time, as one JSON array: a line holding two objects
    must still count as one damaged line, never as two records."""
    write_journal(tmp_path, RECORDS)
    path = tmp_path / store.JOURNAL
    raw = path.read_bytes()
    second = raw.index(b"\n") + 1
    odd = b"%08x %s\n" % (zlib.crc32(body), body)
    path.write_bytes(raw[:second] + odd + raw[second:])
    loaded = Journal(tmp_path).load()
    assert loaded.records == RECORDS
    assert loaded.damaged == [(second, len(odd))]
    assert path.read_bytes() == raw


def test_a_failed_append_leaves_the_journal_as_it_was(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    j = write_journal(tmp_path, RECORDS)
    before = (tmp_path / store.JOURNAL).read_bytes()
    j.open()
    real_write = os.write

    def half_then_full(fd: int, data) -> int:
        if fd == j._fd:
            monkeypatch.setattr(store.os, "write", full)
            return real_write(fd, bytes(data[: len(data) // 2]))
        return real_write(fd, data)

    def full(fd: int, data) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.os, "write", half_then_full)
    with pytest.raises(OSError, match="No space"):
        j.append([{"big": "x" * 1000}, {"big": "y" * 1000}])
    monkeypatch.setattr(store.os, "write", real_write)
    assert (tmp_path / store.JOURNAL).read_bytes() == before
    j.append([{"after": 1}])  # space is back: the journal takes writes again
    j.close()
    assert Journal(tmp_path).load() == Loaded(RECORDS + [{"after": 1}])


# -- atomic JSON -----------------------------------------------------------------------

def test_write_json_atomic_leaves_only_the_file(tmp_path: Path) -> None:
    path = tmp_path / "canais.json"
    store.write_json_atomic(path, [{"channel": "geral"}])
    store.write_json_atomic(path, [{"channel": "ação"}])
    assert json.loads(path.read_text(encoding="utf-8")) == [{"channel": "ação"}]
    assert os.listdir(tmp_path) == ["canais.json"]


def test_failed_rename_keeps_the_old_file_whole(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "canais.json"
    store.write_json_atomic(path, [{"channel": "old"}])
    before = path.read_bytes()
    seen = []

    def failing_replace(src, dst):
        seen.append(Path(src).read_bytes())  # the new content was complete before the rename
        raise OSError("disk on fire")

    monkeypatch.setattr(store.os, "replace", failing_replace)
    with pytest.raises(OSError):
        store.write_json_atomic(path, [{"channel": "new"}] * 1000)
    assert path.read_bytes() == before
    assert json.loads(seen[0]) == [{"channel": "new"}] * 1000


def test_unserialisable_content_keeps_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "canais.json"
    store.write_json_atomic(path, [1, 2])
    with pytest.raises(TypeError):
        store.write_json_atomic(path, [1, object()])
    assert json.loads(path.read_text()) == [1, 2]


def test_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "canais.json"
    with pytest.raises(TypeError):
        store.write_json_atomic(path, [1, object()])
    assert os.listdir(tmp_path) == []


# -- DataFiles -------------------------------------------------------------------------

CONTENTS = {"usuarios.json": [{"user": "ana", "logins": [1.0]}],
            "canais.json": [{"channel": "geral", "timestamp": 1.0, "clock": 1, "id": "s1:1"}]}


def test_write_creates_all_four_files(tmp_path: Path) -> None:
    DataFiles(tmp_path).write(CONTENTS)
    # Beside them only their hidden rings of inodes (bbd.datafiles).
    assert sorted(n for n in os.listdir(tmp_path) if not n.startswith(".")) == sorted(DATA_FILES)
    for name in DATA_FILES:
        assert json.loads((tmp_path / name).read_text()) == CONTENTS.get(name, [])


def test_own_writes_are_not_changes(tmp_path: Path) -> None:
    files = DataFiles(tmp_path)
    assert files.changed_by_others() == {}  # nothing there yet
    for _ in range(3):
        files.write(CONTENTS)
        assert files.changed_by_others() == {}


def replace_by_other(path: Path, obj) -> None:
    other = path.with_name("restored.tmp")
    other.write_text(json.dumps(obj))
    os.replace(other, path)


def test_file_replaced_by_someone_else_is_reported_once(tmp_path: Path) -> None:
    files = DataFiles(tmp_path)
    files.write(CONTENTS)
    restored = [{"channel": "backup", "timestamp": 0.5, "clock": 1, "id": "s9:1"}]
    replace_by_other(tmp_path / "canais.json", restored)
    assert files.changed_by_others() == {"canais.json": restored}
    assert files.changed_by_others() == {}
    files.write(CONTENTS)  # our rewrite is ours again
    assert files.changed_by_others() == {}


def test_in_place_edit_by_someone_else_is_reported(tmp_path: Path) -> None:
    files = DataFiles(tmp_path)
    files.write(CONTENTS)
    with (tmp_path / "mensagens.json").open("w") as f:
        f.write('[{"src": "a", "dst": "b", "message": "edited", "clock": 2, "id": "s9:2"}]')
    changed = files.changed_by_others()
    assert list(changed) == ["mensagens.json"] and changed["mensagens.json"][0]["id"] == "s9:2"


def test_unreadable_foreign_file_is_tried_again(tmp_path: Path) -> None:
    files = DataFiles(tmp_path)
    files.write(CONTENTS)
    path = tmp_path / "publicacoes.json"
    path.write_text('[{"half": ')
    assert files.changed_by_others() == {}
    replace_by_other(path, [{"whole": True}])
    assert files.changed_by_others() == {"publicacoes.json": [{"whole": True}]}


def test_files_present_at_start_are_foreign(tmp_path: Path) -> None:
    # A restart merges what its files hold (idempotent by id), then knows its own writes.
    DataFiles(tmp_path).write(CONTENTS)
    fresh = DataFiles(tmp_path)
    assert set(fresh.changed_by_others()) == set(DATA_FILES)
    assert fresh.changed_by_others() == {}


def test_a_write_in_progress_is_not_taken_for_someone_elses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reload check runs in a thread while the snapshot thread writes: caught between
    the rename and the record of the new signature, our own file looked foreign."""
    import threading

    files = DataFiles(tmp_path)
    files.write(CONTENTS)
    renamed, go_on = threading.Event(), threading.Event()
    real_replace = os.replace

    def slow_replace(src, dst) -> None:
        real_replace(src, dst)
        if str(dst).endswith("usuarios.json"):
            renamed.set()
            go_on.wait(5)

    monkeypatch.setattr(store.os, "replace", slow_replace)
    writer = threading.Thread(target=files.write, args=(CONTENTS,))
    writer.start()
    assert renamed.wait(5)
    seen: list[dict] = []
    checker = threading.Thread(target=lambda: seen.append(files.changed_by_others()))
    checker.start()
    checker.join(0.2)
    go_on.set()
    writer.join(5)
    checker.join(5)
    assert seen == [{}]


def test_a_long_tail_without_newlines_is_cut_in_one_piece(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_journal(tmp_path, RECORDS)
    path = tmp_path / store.JOURNAL
    raw = path.read_bytes()
    path.write_bytes(raw + b"\x00" * 5000)
    monkeypatch.setattr(store, "_BLOCK", 64)
    loaded = Journal(tmp_path).load()
    assert loaded == Loaded(RECORDS, torn=5000)
    assert path.read_bytes() == raw


def test_a_record_line_is_compact_json_with_its_crc() -> None:
    import json as _json
    import zlib as _zlib

    record = {"origin": "s1", "seq": 3, "kind": "publish", "timestamp": 1.5,
              "fields": {"user": "zoë", "message": "a \"quoted\"\nline ✓"}, "rid": "r-1"}
    body = _json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert encode_record(record) == b"%08x %s\n" % (_zlib.crc32(body), body)
    assert decode_record(encode_record(record)) == record


# -- rows: operations in the compact form -------------------------------------------------

ROWS = [(i, "s1", i, "publish", 1.5, None, "ana", "geral", f"olá {i}\n\"x\"") for i in range(1, 6)]


def test_a_row_line_is_a_compact_json_array_with_its_crc() -> None:
    line = encode_record(ROWS[0])
    body = json.dumps(list(ROWS[0]), ensure_ascii=False, separators=(",", ":")).encode()
    assert line == b"%08x|%s\n" % (zlib.crc32(body), body)
    assert decode_record(line) == list(ROWS[0])
    # The head says which form the body holds: neither may pass for the other.
    assert decode_record(line[:8] + b" " + line[9:]) is None
    obj = encode_record({"a": 1})
    assert decode_record(obj[:8] + b"|" + obj[9:]) is None


@pytest.mark.usefixtures("block")
def test_a_journal_of_maps_then_rows_loads_both_in_order(tmp_path: Path) -> None:
    """A journal of the earlier form (maps) goes on in rows; both load, in order."""
    j = write_journal(tmp_path, RECORDS)
    j.open()
    j.append(ROWS[:2])
    j.append([RECORDS[0], ROWS[2]])
    j.close()
    loaded = Journal(tmp_path).load()
    assert loaded.records == [*RECORDS, *map(list, ROWS[:2]), RECORDS[0], list(ROWS[2])]
    assert loaded.maps == len(RECORDS) + 1 and loaded.torn == 0 and not loaded.damaged


@pytest.mark.usefixtures("block")
@pytest.mark.parametrize("answer", ["all", "none", "too few"])
def test_a_decoder_takes_the_blocks_it_can_and_leaves_the_others_to_json(
        tmp_path: Path, answer: str) -> None:
    j = Journal(tmp_path)
    j.open()
    j.append(ROWS)
    j.close()
    seen: list[bytes] = []

    def decode(array: bytes) -> list | None:
        seen.append(array)
        n = array.count(b'"ana"')
        return {"all": ["decoded"] * n, "none": None, "too few": ["decoded"] * (n - 1)}[answer]

    records: list = []
    Journal(tmp_path).load(records.extend, decode=decode)
    # Each block of whole lines is offered as one JSON array; an answer of one record a
    # line is taken, any other means JSON.
    assert records == (["decoded"] * 5 if answer == "all" else [list(r) for r in ROWS])
    assert seen and all(a.startswith(b"[[") and a.endswith(b"]]") for a in seen)


@pytest.mark.usefixtures("block")
def test_damage_in_a_row_in_the_middle_keeps_every_good_record(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.open()
    j.append(ROWS)
    j.close()
    path = tmp_path / store.JOURNAL
    raw = path.read_bytes()
    damaged, offset, length = _flip_in_line(raw, 2)
    path.write_bytes(damaged)
    loaded = Journal(tmp_path).load()
    assert loaded.records == [list(r) for r in ROWS[:2] + ROWS[3:]]
    assert loaded.damaged == [(offset, length)]
    cut = Journal(tmp_path).load()  # moved aside: the journal holds only the good lines
    assert cut.records == loaded.records and cut.damaged == []


def test_rewrite_replaces_the_journal_atomically(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    j = write_journal(tmp_path, RECORDS)
    before = (tmp_path / store.JOURNAL).read_bytes()
    real_replace = os.replace

    def crash(src, dst) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(store.os, "replace", crash)
    with pytest.raises(OSError):
        j.rewrite(ROWS)
    assert (tmp_path / store.JOURNAL).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [store.JOURNAL]  # no temp file left
    monkeypatch.setattr(store.os, "replace", real_replace)
    j.rewrite(ROWS)
    loaded = Journal(tmp_path).load()
    assert loaded.records == [list(r) for r in ROWS] and loaded.maps == 0
    j.open()
    with pytest.raises(AssertionError):
        j.rewrite(ROWS)  # never under an open journal
    j.close()


def test_a_batch_of_rows_is_encoded_as_each_row_alone() -> None:
    from bbd.store import encode_records

    assert encode_records(ROWS) == b"".join(map(encode_record, ROWS))
    mixed = [ROWS[0], RECORDS[0], ROWS[1]]
    assert encode_records(mixed) == b"".join(map(encode_record, mixed))
    odd = [(1, "\ud800")]  # not UTF-8: the standard library's encoder takes it
    with pytest.raises(UnicodeEncodeError):
        encode_records(odd)
    assert encode_records([]) == b""
