"""bbd.datafiles: JSON data files extended in place behind an atomic rename."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from bbd import datafiles
from bbd.datafiles import DATA_FILES, RING, DataFiles, line, render_array
from bbd.state import Board, Op


class Ops:
    """Operations with distinct ids; the caller picks the clock (the place in the order)."""

    def __init__(self) -> None:
        self.seq: dict[str, int] = {}

    def __call__(self, kind: str, clock: int, origin: str = "s1", rid: str | None = None,
                 **fields: str) -> Op:
        self.seq[origin] = self.seq.get(origin, 0) + 1
        return Op(origin, self.seq[origin], clock, kind, float(clock), fields, rid)


def expected(board: Board) -> dict[str, bytes]:
    """The files of a full render of the board."""
    return {name: render_array(line(e) for e in entries)
            for name, entries in board.snapshot().items()}


def on_disk(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in DATA_FILES}


def flush(files: DataFiles, board: Board) -> None:
    files.apply(files.take(board))


def assert_current(directory: Path, board: Board) -> None:
    disk = on_disk(directory)
    assert disk == expected(board)
    for name, raw in disk.items():
        assert json.loads(raw) == board.snapshot()[name]


def seeded_board(ops: Ops, posts: int) -> Board:
    b = Board("s1")
    b.apply(ops("login", 1, user="ana"))
    b.apply(ops("channel", 2, channel="geral"))
    for i in range(posts):
        b.apply(ops("publish", 10 + 2 * i, user="ana", channel="geral", message=f"m{i} ção"))
    return b


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes written through pwrite, per call."""
    sizes: list[int] = []
    real = os.pwrite

    def pwrite(fd: int, data, offset: int) -> int:
        sizes.append(len(data))
        return real(fd, data, offset)

    monkeypatch.setattr(datafiles.os, "pwrite", pwrite)
    return sizes


def test_valid_json_identical_to_a_full_render_after_every_flush(tmp_path: Path) -> None:
    rng = random.Random(11)
    ops = Ops()
    pending: list[Op] = [ops("login", 1, user="ana"), ops("channel", 2, channel="geral")]
    users = ["ana", "bia", "caio", "davi"]
    for _ in range(400):
        clock = rng.randrange(3, 2000)
        origin = rng.choice(["s1", "s2", "s3"])
        kind = rng.choice(["publish", "publish", "message", "login", "channel"])
        if kind == "publish":
            pending.append(ops(kind, clock, origin, user="ana", channel="geral",
                               message=f"p{clock} ü\n\"x\""))
        elif kind == "message":
            pending.append(ops(kind, clock, origin, src="ana", dst=rng.choice(users),
                               message="oi"))
        elif kind == "login":
            pending.append(ops(kind, clock, origin, user=rng.choice(users)))
        else:  # names collide: later ones lose their key and are hidden
            pending.append(ops(kind, clock, origin, channel=f"c{rng.randrange(20)}",
                               rid=f"r{rng.randrange(50)}"))
    board = Board("s1")
    files = DataFiles(tmp_path)
    flush(files, board)
    assert_current(tmp_path, board)
    while pending:  # batches arriving out of order: late ones land in the middle
        batch, pending = pending[:rng.randrange(1, 30)], pending
        del pending[:len(batch)]
        rng.shuffle(batch)
        for op in batch:
            board.apply(op)
        flush(files, board)
        assert_current(tmp_path, board)
        assert not files.pending()


def test_appending_writes_only_the_new_entries(tmp_path: Path, counted: list[int]) -> None:
    ops = Ops()
    costs = []
    for history in (10, 2000):
        board = seeded_board(ops, history)
        files = DataFiles(tmp_path / str(history))
        (tmp_path / str(history)).mkdir()
        for _ in range(RING):  # every inode of the ring has the history
            flush(files, board)
            board.apply(ops("publish", 10_000 + len(board.posts), user="ana", channel="geral",
                            message="x"))
        flush(files, board)
        counted.clear()
        for i in range(10):
            board.apply(ops("publish", 20_000 + i, user="ana", channel="geral", message="new"))
        flush(files, board)
        costs.append(sum(counted))
        assert_current(tmp_path / str(history), board)
    # The same bytes (but for longer ids) on top of 10 or 2000 posts: the entries of the
    # last RING-1 flushes are copied in the kernel, not written here.
    assert costs[0] <= costs[1] < costs[0] * 1.1 < 2000


def test_late_arrival_rewrites_from_its_place_only(tmp_path: Path, counted: list[int]) -> None:
    ops = Ops()
    board = seeded_board(ops, 500)
    files = DataFiles(tmp_path)
    flush(files, board)
    counted.clear()
    # Sorts just before the last ten posts: same clock, smaller origin.
    late = ops("publish", 10 + 2 * 490, "s0", user="ana", channel="geral", message="late")
    board.apply(late)
    flush(files, board)
    assert_current(tmp_path, board)
    posts = json.loads((tmp_path / "publicacoes.json").read_bytes())
    assert posts[490]["id"] == late.id
    assert sum(counted) < 11 * len(line(posts[-1])) + 100


def test_an_entry_hidden_by_an_earlier_competitor_disappears(tmp_path: Path) -> None:
    ops = Ops()
    board = seeded_board(ops, 3)
    files = DataFiles(tmp_path)
    board.apply(ops("channel", 50, "s2", channel="dup"))
    board.apply(ops("publish", 60, "s2", rid="r1", user="ana", channel="geral", message="a"))
    board.apply(ops("channel", 70, "s2", channel="last"))
    flush(files, board)
    assert [c["channel"] for c in json.loads(on_disk(tmp_path)["canais.json"])] == [
        "geral", "dup", "last"]
    board.apply(ops("channel", 40, "s3", channel="dup"))  # wins: the s2 one is hidden
    board.apply(ops("publish", 55, "s3", rid="r1", user="ana", channel="geral", message="b"))
    flush(files, board)
    assert_current(tmp_path, board)
    canais = json.loads(on_disk(tmp_path)["canais.json"])
    assert [(c["channel"], c["id"][:2]) for c in canais] == [
        ("geral", "s1"), ("dup", "s3"), ("last", "s2")]
    # Hiding the very last entry shrinks the file.
    board.apply(ops("channel", 65, "s3", channel="last"))
    flush(files, board)
    assert_current(tmp_path, board)


def test_a_login_of_an_existing_user_rewrites_her_entry(tmp_path: Path) -> None:
    ops = Ops()
    board = Board("s1")
    for i, user in enumerate(["ana", "bia", "caio"]):
        board.apply(ops("login", 1 + i, user=user))
    files = DataFiles(tmp_path)
    flush(files, board)
    board.apply(ops("login", 10, user="ana"))
    board.apply(ops("login", 0, "s0", user="caio"))  # an earlier first login moves caio up
    flush(files, board)
    assert_current(tmp_path, board)
    users = json.loads(on_disk(tmp_path)["usuarios.json"])
    assert [u["user"] for u in users] == ["caio", "ana", "bia"]
    assert users[1]["logins"] == [1.0, 10.0]


def test_a_crash_in_the_middle_of_a_flush_leaves_the_visible_file_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ops = Ops()
    board = seeded_board(ops, 100)
    files = DataFiles(tmp_path)
    flush(files, board)
    before = on_disk(tmp_path)
    real = os.pwrite

    def half_then_fail(fd: int, data, offset: int) -> int:
        real(fd, bytes(data[: len(data) // 2]), offset)
        raise OSError(28, "No space left on device")

    for i in range(20):
        board.apply(ops("publish", 5000 + i, user="ana", channel="geral", message="lost?"))
    board.apply(ops("publish", 11, "s0", user="ana", channel="geral", message="early"))
    monkeypatch.setattr(datafiles.os, "pwrite", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        flush(files, board)
    assert on_disk(tmp_path) == before  # a reader still sees the old, whole array
    assert files.pending()
    monkeypatch.setattr(datafiles.os, "pwrite", real)
    flush(files, board)  # nothing new on the board: the owed entries are written again
    assert_current(tmp_path, board)
    assert not files.pending()


def test_a_reader_holding_the_file_sees_it_unchanged_for_the_grace_period(
        tmp_path: Path) -> None:
    ops = Ops()
    board = seeded_board(ops, 5)
    files = DataFiles(tmp_path)
    flush(files, board)
    with (tmp_path / "publicacoes.json").open("rb") as held:
        first = held.read()
        for i in range(RING - 1):
            board.apply(ops("publish", 900 + i, user="ana", channel="geral", message="more"))
            flush(files, board)
            held.seek(0)
            assert held.read() == first
    assert_current(tmp_path, board)


def test_a_new_process_never_writes_into_the_visible_inode(tmp_path: Path) -> None:
    ops = Ops()
    board = seeded_board(ops, 5)
    flush(DataFiles(tmp_path), board)  # a previous run left inode 0 visible
    with (tmp_path / "publicacoes.json").open("rb") as held:
        first = held.read()
        board.apply(ops("publish", 900, user="ana", channel="geral", message="more"))
        flush(DataFiles(tmp_path), board)  # a new run starts its ring at inode 0
        held.seek(0)
        assert held.read() == first
    assert_current(tmp_path, board)


def test_a_stale_batch_is_skipped(tmp_path: Path) -> None:
    ops = Ops()
    board = seeded_board(ops, 5)
    files = DataFiles(tmp_path)
    flush(files, board)
    board.apply(ops("publish", 100, user="ana", channel="geral", message="one"))
    older = files.take(board)
    board.apply(ops("publish", 101, user="ana", channel="geral", message="two"))
    board.apply(ops("publish", 99, "s0", user="ana", channel="geral", message="zero"))
    newer = files.take(board)  # still holds what ``older`` took: it was not written yet
    files.apply(newer)
    files.apply(older)
    assert_current(tmp_path, board)


def test_take_costs_only_the_changed_entries(tmp_path: Path) -> None:
    ops = Ops()
    board = seeded_board(ops, 1000)
    files = DataFiles(tmp_path)
    flush(files, board)
    board.apply(ops("publish", 9000, user="ana", channel="geral", message="new"))
    batch = files.take(board)
    assert {n: (lo, len(items)) for n, (lo, items) in batch.parts.items()} == {
        "usuarios.json": (1, 0), "canais.json": (1, 0), "publicacoes.json": (1000, 1),
        "mensagens.json": (0, 0)}


def test_a_file_replaced_by_someone_else_is_reported_and_then_rewritten(
        tmp_path: Path) -> None:
    ops = Ops()
    board = seeded_board(ops, 10)
    files = DataFiles(tmp_path)
    flush(files, board)
    assert files.changed_by_others() == {}
    restored = [{"user": "x", "channel": "geral", "message": "m", "clock": 3, "id": "s9:1"}]
    other = tmp_path / "restore.tmp"
    other.write_text(json.dumps(restored))
    os.replace(other, tmp_path / "publicacoes.json")
    assert files.changed_by_others() == {"publicacoes.json": restored}
    assert files.changed_by_others() == {}
    assert files.pending()
    flush(files, board)  # the board did not change: ours goes back in full all the same
    assert_current(tmp_path, board)
    assert files.changed_by_others() == {}


def test_an_in_place_edit_of_the_visible_inode_is_reported_and_repaired(
        tmp_path: Path) -> None:
    ops = Ops()
    board = seeded_board(ops, 10)
    files = DataFiles(tmp_path)
    for _ in range(RING):  # every inode in use
        board.apply(ops("publish", 500 + len(board.posts), user="ana", channel="geral",
                        message="m"))
        flush(files, board)
    with (tmp_path / "publicacoes.json").open("r+b") as f:  # writes into our inode
        f.write(b'[{"id": "s9:9"}]\n')
        f.truncate()
    assert list(files.changed_by_others()) == ["publicacoes.json"]
    for i in range(RING + 1):
        board.apply(ops("publish", 800 + i, user="ana", channel="geral", message="after"))
        flush(files, board)
        assert_current(tmp_path, board)


@pytest.mark.parametrize("damage", ["remove", "truncate"])
def test_a_missing_or_damaged_hidden_inode_is_refilled(tmp_path: Path, damage: str) -> None:
    ops = Ops()
    board = seeded_board(ops, 50)
    files = DataFiles(tmp_path)
    for _ in range(RING):
        board.apply(ops("publish", 500 + len(board.posts), user="ana", channel="geral",
                        message="m"))
        flush(files, board)
    ring = files.rings["publicacoes.json"]
    target = ring.inodes[(ring.visible + 1) % RING]  # the next one written
    if damage == "remove":
        target.unlink()
    else:
        with target.open("r+b") as f:
            f.truncate(10)
    for i in range(RING + 1):
        board.apply(ops("publish", 900 + i, user="ana", channel="geral", message="after"))
        flush(files, board)
        assert_current(tmp_path, board)


def test_a_removed_visible_file_is_put_back(tmp_path: Path) -> None:
    ops = Ops()
    board = seeded_board(ops, 5)
    files = DataFiles(tmp_path)
    flush(files, board)
    (tmp_path / "canais.json").unlink()
    assert files.changed_by_others() == {}
    assert files.pending()
    flush(files, board)
    assert_current(tmp_path, board)


def test_a_new_process_renders_in_full_over_old_files(tmp_path: Path) -> None:
    ops = Ops()
    board = seeded_board(ops, 20)
    flush(DataFiles(tmp_path), board)
    board = seeded_board(Ops(), 7)  # a different board in the same directory
    files = DataFiles(tmp_path)
    assert files.pending()
    flush(files, board)
    assert_current(tmp_path, board)


def test_an_empty_board_gives_empty_arrays(tmp_path: Path) -> None:
    files = DataFiles(tmp_path)
    flush(files, Board("s1"))
    assert on_disk(tmp_path) == dict.fromkeys(DATA_FILES, b"[\n]\n")
