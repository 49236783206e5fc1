"""The floor benchmark's nodes do the work they are measured for: a reply only after the
write is fsync'd locally and acknowledged by both peers, one round out at a time."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import msgpack
import zmq
from twisted.internet.task import Clock

from bbd import floorbench
from bbd.floorbench import RECORD, Floor


class Harness:
    """A Floor with every effect recorded in one log, in order."""

    def __init__(self, peers: int = 2, early: bool = False) -> None:
        self.clock = Clock()
        self.log: list[tuple[str, object]] = []
        self.floor = Floor(self.clock, lambda data: self.log.append(("write", len(data))),
                           lambda: self.log.append(("fsync", None)), peers,
                           lambda body: self.log.append(("round", len(msgpack.unpackb(body)))),
                           lambda env: self.log.append(("reply", env[0])),
                           lambda env: self.log.append(("ack", env[0])), early)

    def kinds(self) -> list[str]:
        return [k for k, _ in self.log]


def test_a_reply_waits_for_the_fsync_and_both_peers_acks() -> None:
    h = Harness()
    h.floor.request([b"a"])
    h.floor.request([b"b"])
    assert h.log == []  # nothing before the end of the turn
    h.clock.advance(0)
    # One write and one fsync for the turn, then one round holding both records.
    assert h.log == [("write", 2 * len(RECORD)), ("fsync", None), ("round", 2)]
    h.floor.acked()
    assert "reply" not in h.kinds()  # one peer is not enough
    h.floor.acked()
    assert h.log[3:] == [("reply", b"a"), ("reply", b"b")]
    assert h.floor.stats()["fsyncs"] == 1 and h.floor.stats()["replies"] == 2


def test_one_round_is_out_at_a_time_and_the_next_takes_what_became_durable_meanwhile() -> None:
    h = Harness()
    h.floor.request([b"a"])
    h.clock.advance(0)
    for env in (b"b", b"c"):  # two turns while the first round is out
        h.floor.request([env])
        h.clock.advance(0)
    assert h.kinds().count("round") == 1 and h.kinds().count("fsync") == 3
    h.floor.acked()
    h.floor.acked()
    assert h.log[-2:] == [("reply", b"a"), ("round", 2)]  # b and c leave together
    h.floor.acked()
    h.floor.acked()
    assert [v for k, v in h.log if k == "reply"] == [b"a", b"b", b"c"]


def test_a_peers_round_is_journalled_and_fsynced_before_its_ack() -> None:
    h = Harness()
    h.floor.replicate([b"peer"], [RECORD, RECORD, RECORD])
    h.clock.advance(0)
    assert h.log == [("write", 3 * len(RECORD)), ("fsync", None), ("ack", b"peer")]


def test_replicate_first_sends_the_round_before_the_fsync_and_still_waits_for_it() -> None:
    h = Harness(early=True)
    h.floor.request([b"a"])
    h.clock.advance(0)
    assert h.kinds() == ["write", "round", "fsync"]
    h.floor.acked()
    h.floor.acked()
    assert h.kinds()[-1] == "reply"


def test_a_single_node_replies_after_its_fsync() -> None:
    h = Harness(peers=0)
    h.floor.request([b"a"])
    h.clock.advance(0)
    assert h.kinds() == ["write", "fsync", "reply"]


def _ask(ctx: zmq.Context, frontend: str, timeout: float) -> bytes | None:
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(frontend)
    try:
        sock.send(msgpack.packb({"service": "publish", "data": {"message": "x"}}))
        return sock.recv() if sock.poll(int(timeout * 1000)) else None
    finally:
        sock.close(0)


def test_three_nodes_answer_only_while_both_peers_ack(tmp_path: Path) -> None:
    nodes = floorbench.FloorNodes("floor", tmp_path / "floor", 3, fsync=True)
    ctx = zmq.Context()
    try:
        nodes.start()
        assert _ask(ctx, nodes.frontend, 10) == floorbench.REPLY
        # A stopped peer acks nothing: whichever node takes the request (the broker
        # re-sends it to another after 0.6 s) cannot answer it.
        nodes.cluster.signal("floor2", signal.SIGSTOP)
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(nodes.frontend)
        sock.send(b"while floor2 is stopped")
        assert not sock.poll(2000)
        nodes.cluster.signal("floor2", signal.SIGCONT)
        assert sock.poll(8000), "no reply after the peer resumed"
        assert sock.recv() == floorbench.REPLY
        sock.close(0)
        stats = nodes.stats()
        assert all(s is not None for s in stats)
        # Every node journalled and fsync'd: its own writes and its peers' rounds.
        assert all(s["fsyncs"] >= 1 and s["records"] >= 2 for s in stats)
        assert sum(s["replies"] for s in stats) >= 2
    finally:
        ctx.destroy(linger=0)
        started = time.monotonic()
        nodes.stop()
        assert time.monotonic() - started < 10


def test_a_preallocated_journal_is_written_over_zeros_and_grows_a_step_at_a_time(
        tmp_path: Path) -> None:
    path = tmp_path / "journal"
    journal = floorbench.Journal(str(path), prealloc=1 << 20)
    assert path.stat().st_size == 1 << 20
    journal.write(b"a" * 1000)
    journal.write(b"b" * (1 << 20))  # past the end: one more step of zeros first
    journal.sync()
    data = path.read_bytes()
    assert len(data) == 2 << 20
    assert data[:1000] == b"a" * 1000 and data[1000:1000 + (1 << 20)] == b"b" * (1 << 20)
    assert data[1000 + (1 << 20):] == bytes((2 << 20) - 1000 - (1 << 20))


def test_only_keeps_the_named_setups_and_always_the_echo() -> None:
    from types import SimpleNamespace

    setups = [SimpleNamespace(name=n) for n in (
        "echo", "twisted echo", "floor, 3 nodes, fsync", "floor, 3 nodes, no fsync",
        "board, 3 servers")]
    names = [s.name for s in floorbench.chosen(setups, ["nodes, fsync", "board"])]
    assert names == ["echo", "floor, 3 nodes, fsync", "board, 3 servers"]
    assert floorbench.chosen(setups, []) == setups
