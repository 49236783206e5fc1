"""The attacks of issue 9 against real daemons, sent from this process as a stranger would:
without the board's keys (a plain socket, or a CURVE key pair of its own that knows the
board's public key). Each runs twice: with authentication (the stranger cannot even be
heard) and in classroom mode, ``--no-auth`` (heard, but the entitlement checks refuse).
The harness's own probes (``Cluster.ask``, ``status``) use the board's keys."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from bbd.client import Subscriber
from bbd.localcluster import Cluster, wait_for

STRANGER_WAIT = 1.0  # how long a stranger waits for an answer that must not come


@pytest.fixture(scope="module", params=[True, False], ids=["auth", "no-auth"])
def board(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="bbd-attacks-"))
    c = Cluster(root, servers=2, authenticated=request.param)
    try:
        c.start()
        wait_for(lambda: _coordinator(c), 30, "an elected coordinator")
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def _coordinator(c: Cluster) -> str | None:
    views = {(c.status(n) or {}).get("coordinator") for n in c.names()}
    return views.pop() if len(views) == 1 and None not in views else None


def stranger_options(c: Cluster, own_curve_key: bool) -> dict[int, Any]:
    if not own_curve_key or c.keys is None:
        return {}
    public, secret = zmq.curve_keypair()
    return {zmq.CURVE_SERVERKEY: c.keys.public, zmq.CURVE_PUBLICKEY: public,
            zmq.CURVE_SECRETKEY: secret}


def stranger_ask(c: Cluster, endpoint: str, service: str, data: dict[str, Any],
                 own_curve_key: bool = False) -> dict[str, Any] | None:
    """One request as a stranger: the reply's data, or None if nothing came back."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    for option, value in stranger_options(c, own_curve_key).items():
        sock.setsockopt(option, value)
    sock.connect(endpoint)
    try:
        sock.send(msgpack.packb({"service": service, "data": {**data, "clock": 1,
                                                                "timestamp": time.time()}}))
        if not sock.poll(int(STRANGER_WAIT * 1000)):
            return None
        return msgpack.unpackb(sock.recv(), raw=False)["data"]
    finally:
        sock.close(0)


def refused(c: Cluster, reply: dict[str, Any] | None) -> bool:
    """With authentication nothing answers a stranger; without, the answer is ``erro``."""
    if c.keys is not None:
        return reply is None
    return reply is not None and reply.get("status") == "erro"


def applied(c: Cluster) -> dict[str, int]:
    return {n: c.status(n)["applied"] for n in c.names()}


def op(origin: str, seq: int, kind: str, fields: dict[str, str], clock: int = 1) -> dict:
    return {"origin": origin, "seq": seq, "clock": clock, "kind": kind,
            "timestamp": time.time(), "fields": fields}


def test_forged_replicate_is_refused(board: Cluster) -> None:
    target = board.names()[0]
    other = board.names()[1]
    before = applied(board)
    vector = board.status(target)["vector"]
    forged_batches = [
        [op("evil-origin", 1, "publish", {"user": "ghost", "channel": "nowhere",
                                          "message": "forged"})],
        [op(other, 10**12, "login", {"user": "servers"})],
        [op(target, vector.get(target, 0) + 1, "channel", {"channel": "forged"})],
        [op(other, vector.get(other, 0) + 2, "channel", {"channel": "gap"})],
    ]
    for ops in forged_batches:
        for own_key in (False, True):
            reply = stranger_ask(board, board.replication_endpoint(target), "replicate",
                                 {"ops": ops}, own_key)
            assert refused(board, reply), (ops, reply)
    assert applied(board) == before
    assert "evil-origin" not in board.status(target)["vector"]


def test_anonymous_pull_gets_nothing(board: Cluster) -> None:
    for sender in (None, {"name": "evil", "rank": 9, "replication": "tcp://127.0.0.1:1",
                          "sync": "tcp://127.0.0.1:2"}):
        data: dict[str, Any] = {"vector": {}, "after": None}
        if sender:
            data["from"] = sender
        reply = stranger_ask(board, board.replication_endpoint(board.names()[0]), "pull", data)
        assert refused(board, reply), reply
        assert "ops" not in (reply or {})


def test_forged_announcement_through_the_proxy_is_not_followed(board: Cluster) -> None:
    real = _coordinator(board)
    assert real is not None
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(board.xsub)
    watcher = Subscriber(board.xpub, ["servers"])  # anyone may subscribe (port 5558)
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + 2.5  # more than two announce intervals
        while time.monotonic() < deadline:
            for name, rank in (("evil-coord", 99), (board.names()[0], 1)):
                body = {"service": "election", "data": {"coordinator": name, "rank": rank,
                                                        "clock": 1, "timestamp": time.time()}}
                pub.send_multipart([b"servers", msgpack.packb(body)])
            # Read everything queued: in classroom mode the forged ones arrive too.
            while (got := watcher.receive(timeout=0.1)) is not None:
                seen.add(got[1]["data"]["coordinator"])
            assert _coordinator(board) == real
    finally:
        pub.close(0)
        watcher.close()
    assert real in seen  # the genuine announcements reach subscribers
    if board.keys is not None:
        assert seen == {real}  # the stranger's never left its own socket


def test_forged_adjust_is_refused(board: Cluster) -> None:
    coordinator = _coordinator(board)
    follower = next(n for n in board.names() if n != coordinator)
    for own_key in (False, True):
        reply = stranger_ask(board, board.sync_endpoint(follower), "adjust",
                             {"name": coordinator, "delta": 5.0, "round": 1}, own_key)
        assert refused(board, reply), reply
    s = board.status(follower)
    assert s["last_adjustment"] != 5.0 and abs(s["offset"]) < 1.0


def test_name_hijack_is_refused(board: Cluster) -> None:
    victim = board.names()[1]
    real = next(e for e in board.ask(board.reference, "list")["list"] if e["name"] == victim)
    evil = {"user": victim, "sync": "tcp://127.0.0.1:1", "replication": "tcp://127.0.0.1:2"}
    for data in (evil, {**evil, "token": "guessed"}):
        assert refused(board, stranger_ask(board, board.reference, "rank", data))
    assert refused(board, stranger_ask(board, board.reference, "heartbeat", {"user": victim}))
    listed = next(e for e in board.ask(board.reference, "list")["list"] if e["name"] == victim)
    assert listed == real
    saved = json.loads((board.data_dir("reference") / "referencia.json").read_text())
    assert next(e for e in saved if e["name"] == victim)["endpoints"]["replication"] \
        == real["replication"]
    # Writes still reach the victim: its traffic was not redirected.
    before = board.status(victim)["applied"]
    board.client().request("login", {"user": f"u-{uuid.uuid4().hex[:8]}"})
    wait_for(lambda: board.status(victim)["applied"] > before, 10, "the write at the victim")


def test_forged_post_on_the_proxy_xsub_reaches_subscribers_only_in_classroom_mode(
        board: Cluster) -> None:
    channel = f"c-{uuid.uuid4().hex[:8]}"
    user = f"u-{uuid.uuid4().hex[:8]}"
    client = board.client()
    client.request("login", {"user": user})
    client.request("channel", {"channel": channel})
    watcher = Subscriber(board.xpub, [channel])
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(board.xsub)
    try:
        forged = {"service": "publish", "user": "evil", "channel": channel,
                  "message": "forged", "clock": 1, "timestamp": time.time()}
        deadline = time.monotonic() + 1.5
        got = None
        while time.monotonic() < deadline and got is None:
            pub.send_multipart([channel.encode(), msgpack.packb(forged)])
            got = watcher.receive(timeout=0.1)
        if board.keys is not None:
            assert got is None
        else:
            assert got is not None and got[1]["message"] == "forged"  # what --no-auth allows
        client.request("publish", {"user": user, "channel": channel, "message": "genuine"})
        got = watcher.receive(timeout=5)
        assert got is not None and got[1]["message"] == "genuine"  # the subscriber works
    finally:
        pub.close(0)
        watcher.close()


def test_bbd_status_uses_the_keys(board: Cluster, capsys: pytest.CaptureFixture,
                                  tmp_path: Path) -> None:
    from bbd import cli

    keys_dir = board.layout.keys if board.keys is not None else tmp_path / "none"
    assert cli.status(board.reference, 1.0, None, keys_dir) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in board.names())
    # Without the keys, an authenticated board does not answer.
    code = cli.status(board.reference, 1.0, None, tmp_path / "none")
    assert code == (1 if board.keys is not None else 0)


def test_fake_peer_is_admitted_only_in_classroom_mode(board: Cluster) -> None:
    """Last in the module: in classroom mode the fake joins the list (by design)."""
    fake = {"user": "fake-peer", "sync": "tcp://127.0.0.1:1", "replication": "tcp://127.0.0.1:2"}
    for own_key in (False, True):
        reply = stranger_ask(board, board.reference, "rank", fake, own_key)
        assert (reply is None) == (board.keys is not None), reply
    names = {e["name"] for e in board.ask(board.reference, "list")["list"]}
    if board.keys is not None:
        assert names == set(board.names())
    else:
        assert names == {*board.names(), "fake-peer"}  # what --no-auth allows (README)
