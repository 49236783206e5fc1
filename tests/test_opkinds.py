"""The operation-kind table: what each kind holds, shows, stores and publishes."""

from __future__ import annotations

from bbd import opkinds
from bbd.state import Board, Op, ops_from_files


def test_publications_are_the_standard_payloads() -> None:
    post = Op("s1", 3, 7, "publish", 12.5, {"user": "ana", "channel": "geral",
                                              "message": "oi"})
    assert opkinds.publication(post, "publish") == ("geral", {
        "service": "publish", "user": "ana", "channel": "geral", "message": "oi",
        "timestamp": 12.5, "clock": 7, "id": "s1:3"})
    pm = Op("s1", 4, 8, "message", 13.0, {"src": "ana", "dst": "bob", "message": "x"})
    assert opkinds.publication(pm, "message") == ("bob", {
        "service": "message", "src": "ana", "dst": "bob", "user": "ana", "from": "ana",
        "to": "bob", "message": "x", "timestamp": 13.0, "clock": 8, "id": "s1:4"})
    assert [k for k in opkinds.KINDS if opkinds.published(k)] == ["publish", "message"]


def test_every_kind_is_shown_stored_and_read_back_through_its_row() -> None:
    fields = {"login": {"user": "ana"}, "channel": {"channel": "geral"},
              "publish": {"user": "ana", "channel": "geral", "message": "oi"},
              "message": {"src": "ana", "dst": "ana", "message": "eu"}}
    assert set(fields) == set(opkinds.KINDS)
    board = Board("s1")
    for seq, (kind, f) in enumerate(fields.items(), start=1):
        assert tuple(f) == opkinds.KINDS[kind].fields
        board.apply(Op("s1", seq, seq, kind, float(seq), f, rid=f"r{seq}"))
    files = board.snapshot()
    assert list(files) == list(opkinds.DATA_FILES)
    for kind in opkinds.KINDS.values():
        assert len(getattr(board, kind.view)) == 1  # shown in its view
        assert len(files[kind.data_file]) == 1  # stored in its file
    again = Board("s1")
    for op in ops_from_files(files):
        again.apply(op)
    assert again.snapshot() == files
    channel = board.get("s1", 2)
    assert channel is not None and channel.keys() == ["channel:geral", "rid:r2"]
