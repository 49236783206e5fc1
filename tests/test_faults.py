"""Faults outside the happy path, against real daemons: a full disk, damage in the middle of
a journal, and a catch-up longer than the reference's heartbeat expiry."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from bbd import config
from bbd.client import Client
from bbd.localcluster import Cluster, wait_for


def posts_in(data_dir: Path) -> list[str]:
    return [e["message"] for e in json.loads((data_dir / "publicacoes.json").read_text())]


def wait_converged(cluster: Cluster, timeout: float = 60) -> list[dict]:
    def same() -> list[dict] | None:
        statuses = [cluster.status(n) for n in cluster.names()]
        if any(s is None or not s["ready"] or not s["files_current"] for s in statuses):
            return None
        vectors = {json.dumps(s["vector"], sort_keys=True) for s in statuses}
        return statuses if len(vectors) == 1 else None

    return wait_for(same, timeout, "every server to hold the same operations")


def setup_board(cluster: Cluster) -> Client:
    c = Client(cluster.frontend, timeout=2.0, retries=5)
    assert c.request("login", {"user": "ana"})["status"] == "sucesso"
    assert c.request("channel", {"channel": "geral"})["status"] == "sucesso"
    return c


# -- a full disk -----------------------------------------------------------------------

def need_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.fail(f"this test needs root to {what} (CI runs as root)")


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


def test_a_full_disk_refuses_writes_applies_none_and_heals_without_restart(
        tmp_path: Path) -> None:
    need_root("mount a small tmpfs")
    store = tmp_path / "s3-store"
    store.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(store)], check=True)
    cluster = Cluster(tmp_path / "c")
    plain = cluster._daemon

    def on_small_disk(name: str):
        daemon = plain(name)
        if name == "servidor-3":  # its data (not its log) on the small disk
            daemon.args[daemon.args.index("--data") + 1] = str(store)
        return daemon

    cluster._daemon = on_small_disk
    try:
        cluster.start()
        c = setup_board(cluster)
        wait_converged(cluster)
        filler = fill(store)

        ok, refused = [], []
        # Posts of 5,000 characters: a journal's last page (4 KB) has room left after the
        # filler, and short rows could all fit in it; each of these needs a new page.
        pad = "." * 5000
        for i in range(30):  # the broker spreads them over the three servers
            r = c.request("publish", {"user": "ana", "channel": "geral",
                                      "message": f"p{i}{pad}"})
            if r["status"] == "OK":
                ok.append(f"p{i}{pad}")
            else:
                assert "storage unavailable" in r["message"], r
                refused.append(f"p{i}")
        assert refused and ok
        status = cluster.status("servidor-3")
        assert status["storage_error"] and "No space left" in status["storage_error"]
        assert "ana" in c.request("users")["users"]  # reads are served all along

        # Killed while the disk is full, it starts again and serves (no restart loop).
        cluster.restart("servidor-3")
        assert cluster.status("servidor-3")["ready"]

        filler.unlink()  # space is back: no restart needed
        more = [f"q{i}" for i in range(9)]
        for text in more:
            r = c.request("publish", {"user": "ana", "channel": "geral", "message": text})
            assert r["status"] == "OK", r
        wait_converged(cluster)
        assert cluster.status("servidor-3")["storage_error"] is None
        for name in cluster.names():
            held = posts_in(store if name == "servidor-3" else cluster.data_dir(name))
            assert sorted(held) == sorted(ok + more), name  # nothing refused was applied
        c.close()
    finally:
        cluster.stop()
        subprocess.run(["umount", "-l", str(store)], check=False)


# -- damage in the middle of a journal -------------------------------------------------

def flip_a_byte_in_the_middle(journal: Path) -> int:
    raw = bytearray(journal.read_bytes())
    start = raw.index(b"\n", len(raw) // 2) + 1  # a whole record in the middle
    raw[start + 30] ^= 0x01
    journal.write_bytes(bytes(raw))
    return start


def post_many(c: Client, n: int, prefix: str) -> list[str]:
    texts = [f"{prefix}{i}" for i in range(n)]
    for text in texts:
        assert c.request("publish", {"user": "ana", "channel": "geral",
                                     "message": text})["status"] == "OK"
    return texts


def test_a_lone_server_keeps_every_record_after_damage_in_the_middle(make_cluster) -> None:
    cluster = make_cluster(servers=1)
    c = setup_board(cluster)
    texts = post_many(c, 200, "m")
    c.close()
    name = cluster.names()[0]
    cluster.kill(name)
    data = cluster.data_dir(name)
    flip_a_byte_in_the_middle(data / "journal.log")
    cluster.restart(name)
    c = setup_board_again(cluster)
    got = [m["message"] for m in c.request("history", {"channel": "geral",
                                                       "limit": 1000})["messages"]]
    # One record was damaged; the ones after it (about a hundred) were kept.
    assert len(got) == len(texts) - 1 and set(got) < set(texts)
    assert (data / "journal.damaged").stat().st_size > 0
    c.close()


def setup_board_again(cluster: Cluster) -> Client:
    return Client(cluster.frontend, timeout=2.0, retries=5)


def test_damage_in_the_middle_of_a_journal_is_fetched_from_the_peers(make_cluster) -> None:
    cluster = make_cluster()
    c = setup_board(cluster)
    post_many(c, 150, "n")
    before = wait_converged(cluster)
    name = "servidor-1"
    cluster.kill(name)
    flip_a_byte_in_the_middle(cluster.data_dir(name) / "journal.log")
    cluster.restart(name)
    after = wait_converged(cluster)
    assert after[0]["applied"] == before[0]["applied"]
    files = {n: (cluster.data_dir(n) / "publicacoes.json").read_bytes()
             for n in cluster.names()}
    assert len(set(files.values())) == 1
    assert (cluster.data_dir(name) / "journal.damaged").exists()
    c.close()


# -- a catch-up longer than the heartbeat expiry ---------------------------------------

class SilentPeer:
    """A registered server that answers nothing on its replication port: every pull from
    it waits the whole peer timeout."""

    def __init__(self, reference: str, security: dict | None = None) -> None:
        self.security = security or {}  # the board's keys: it poses as one of its servers
        self.ctx = zmq.Context()
        self.sink = self.ctx.socket(zmq.ROUTER)
        self.sink.setsockopt(zmq.LINGER, 0)
        if self.security:  # a CURVE server like the board's replication ports
            self.sink.setsockopt(zmq.CURVE_SERVER, 1)
            self.sink.setsockopt(zmq.CURVE_SECRETKEY, self.security[zmq.CURVE_SECRETKEY])
        port = self.sink.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.reference = reference
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _call(self, sock: zmq.Socket, service: str, data: dict) -> dict:
        sock.send(msgpack.packb({"service": service, "data": data}))
        assert sock.poll(2000), f"reference did not answer {service}"
        return msgpack.unpackb(sock.recv())["data"]

    def start(self) -> SilentPeer:
        sock = self.ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        for option, value in self.security.items():
            sock.setsockopt(option, value)
        sock.connect(self.reference)
        self._call(sock, "rank", {"user": "silencioso", "replication": self.endpoint,
                                  "sync": self.endpoint})
        self.sock = sock
        self.thread.start()
        return self

    def _beat(self) -> None:
        while not self.stop.wait(0.2):
            self._call(self.sock, "heartbeat", {"user": "silencioso"})

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.ctx.destroy(0)


def test_a_catch_up_longer_than_the_expiry_keeps_the_server_listed(
        make_cluster, tmp_path: Path) -> None:
    conf = tmp_path / "bbd.toml"
    text = config.config_path().read_text()
    text = text.replace("heartbeat_expiry = 2.0", "heartbeat_expiry = 1.0")
    text = text.replace("peer_timeout = 1.0", "peer_timeout = 2.5")
    conf.write_text(text)
    cluster = make_cluster(env={"BBD_CONFIG": str(conf)})
    from bbd import auth

    silent = SilentPeer(cluster.reference, auth.client_options(cluster.keys)).start()
    try:
        cluster.kill("servidor-3")
        wait_for(lambda: "servidor-3" not in listed(cluster), 10, "the old entry to expire")
        cluster.spawn("servidor-3")
        listed_at: float | None = None
        dropped = []
        while True:
            status = cluster.status("servidor-3", timeout=0.3)
            if status and status["ready"]:
                break
            if "servidor-3" in listed(cluster):
                listed_at = listed_at or time.monotonic()
            elif listed_at is not None:
                dropped.append(time.monotonic() - listed_at)
            assert time.monotonic() - (listed_at or time.monotonic()) < 30
            time.sleep(0.05)
        assert listed_at is not None
        # The pull from the silent peer alone outlasts the 1 s expiry.
        assert time.monotonic() - listed_at > 2.0
        assert dropped == [], f"left the reference's list during catch-up at {dropped}"
    finally:
        silent.close()


def listed(cluster: Cluster) -> list[str]:
    reply = cluster.ask(cluster.reference, "list")
    return [e["name"] for e in (reply or {}).get("list", [])]
