"""The daemon set against real twistd processes: services, pub/sub, bad input, durability."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

import msgpack
import pytest
import zmq

from bbd.client import Client, Subscriber, Unavailable
from bbd.localcluster import Cluster, wait_for


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_all_services_and_history(cluster: Cluster) -> None:
    c = cluster.client()
    ana, bob, ch = uid("ana"), uid("bob"), uid("canal")
    assert c.request("login", {"user": ana})["status"] == "sucesso"
    assert c.request("login", {"user": bob})["status"] == "sucesso"
    assert c.request("channel", {"channel": ch})["status"] == "sucesso"
    again = c.request("channel", {"channel": ch})
    assert again["status"] == "erro" and "already exists" in again["description"]
    assert c.request("publish", {"user": ana, "channel": ch, "message": "ola"})["status"] == "OK"
    assert c.request("message", {"src": ana, "dst": bob, "message": "oi"})["status"] == "OK"
    # Replies from every server (round-robin) agree: the writes were replicated.
    for _ in range(3):
        reply = c.call("users")
        assert reply["service"] == "users"
        assert {ana, bob} <= set(reply["data"]["users"])
        assert isinstance(reply["data"]["clock"], int)
        assert isinstance(reply["data"]["timestamp"], float)
        assert ch in c.request("channels")["channels"]
        posts = c.request("history", {"channel": ch})["messages"]
        assert [(p["user"], p["message"]) for p in posts] == [(ana, "ola")]
        pms = c.request("history", {"user": bob})["messages"]
        assert [(m["src"], m["dst"], m["message"]) for m in pms] == [(ana, bob, "oi")]


def test_write_errors_use_the_standard_words(cluster: Cluster) -> None:
    c = cluster.client()
    ghost, ch = uid("ghost"), uid("nochannel")
    r = c.request("publish", {"user": ghost, "channel": ch, "message": "x"})
    assert r["status"] == "erro" and "does not exist" in r["message"]
    r = c.request("message", {"src": ghost, "dst": ghost, "message": "x"})
    assert r["status"] == "erro" and "has not logged in" in r["message"]


def test_subscriptions_are_exact_topics(cluster: Cluster) -> None:
    c = cluster.client()
    ana = uid("ana")
    longer = ana + "bela"  # shares ana's prefix
    ch = uid("ch")
    for user in (ana, longer):
        c.request("login", {"user": user})
    c.request("channel", {"channel": ch})
    c.request("channel", {"channel": ch + "x"})
    sub = Subscriber(cluster.xpub, [ana, ch])
    # The subscription reaches the proxy asynchronously: post until the first one arrives.
    def first_post() -> object:
        c.request("publish", {"user": ana, "channel": ch, "message": "warmup"})
        return sub.receive(0.3)
    wait_for(first_post, 10, "the subscription to reach the proxy")
    while sub.receive(0.3):
        pass
    c.request("message", {"src": longer, "dst": longer, "message": "not for ana"})
    c.request("publish", {"user": ana, "channel": ch + "x", "message": "other channel"})
    c.request("message", {"src": longer, "dst": ana, "message": "for ana"})
    c.request("publish", {"user": ana, "channel": ch, "message": "on topic"})
    got = [sub.receive(2), sub.receive(2), sub.receive(0.5)]
    assert got[2] is None
    by_topic = {topic: payload for topic, payload in got[:2]}
    assert by_topic[ana]["service"] == "message"
    assert by_topic[ana]["user"] == longer and by_topic[ana]["src"] == longer
    assert by_topic[ana]["message"] == "for ana" and by_topic[ana]["dst"] == ana
    assert by_topic[ch]["service"] == "publish" and by_topic[ch]["message"] == "on topic"
    assert by_topic[ch]["user"] == ana and by_topic[ch]["channel"] == ch
    for payload in by_topic.values():
        assert isinstance(payload["clock"], int) and payload["id"]
    sub.close()


def test_aliases_and_json_fallback(cluster: Cluster) -> None:
    c = cluster.client()
    name = uid("alias")
    frame = msgpack.packb({"opcao": "login", "dados": {"user": name, "timestamp": 1698250000}})
    reply = c.call("login", raw=frame)
    assert reply["service"] == "login" and reply["data"]["status"] == "sucesso"
    raw = json.dumps({"service": "users", "data": {"timestamp": "now"}}).encode()
    reply = c.call("users", raw=raw)  # the client decodes the reply as JSON
    assert name in reply["data"]["users"]
    # And it really was JSON on the wire.
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(cluster.frontend)
    s.send(b'  {"opcao": "channels", "dados": {}}')
    assert s.poll(5000)
    assert "channels" in json.loads(s.recv())["data"]
    s.close()


BAD_FRAMES = [
    (b"\xc1\xc1garbage", "error", "not valid MessagePack"),
    (b"", "error", "empty frame"),
    (msgpack.packb([1, 2, 3]), "error", "expected a map"),
    (msgpack.packb({"data": {}}), "error", "missing field 'service'"),
    (msgpack.packb({"service": 7}), "error", "must be a string"),
    (msgpack.packb({"service": "nope", "data": {}}), "nope", "unknown service"),
    (msgpack.packb({"service": "login", "data": []}), "login", "must be a map"),
    (msgpack.packb({"service": "login", "data": {}}), "login", "missing field 'user'"),
    (msgpack.packb({"service": "login", "data": {"user": 12}}), "login", "must be a string"),
    (msgpack.packb({"service": "login", "data": {"user": b"bytes"}}, use_bin_type=True),
     "login", "must be a string"),
    (msgpack.packb({"service": "login", "data": {"user": ""}}), "login", "empty"),
    (msgpack.packb({"service": "login", "data": {"user": "x" * 65}}), "login", "longer"),
    (msgpack.packb({"service": "login", "data": {"user": "a\x07b"}}), "login", "control"),
    (msgpack.packb({"service": "login", "data": {"user": " pad"}}), "login", "blanks"),
    (msgpack.packb({"service": "login", "data": {"user": "servers"}}), "login", "reserved"),
    (msgpack.packb({"service": "channel", "data": {"channel": "servers"}}), "channel",
     "reserved"),
    (msgpack.packb({"service": "publish", "data": {"user": "a", "channel": "b"}}), "publish",
     "missing field 'message'"),
    (b"\x81\xa7service\xa4\xff\xfe\xfd\xfc", "error", "UTF-8"),
    (msgpack.packb({"service": "history", "data": {}}), "history", "needs 'channel'"),
    (b"{not json", "error", "not valid JSON"),
    (b'{"service": "login", "data": {"user": "a"b"}}', "error", "not valid JSON"),
    (b'{"a":' * 5000 + b"1" + b"}" * 5000, "error", "nested too deeply"),
    (b"\x91" * 5000 + b"\x01", "error", "not valid MessagePack"),
    (msgpack.packb({"service": "login", "data": {"user": "\u0301"}}), "login",
     "combining mark"),
    (msgpack.packb({"service": "login", "data": {"user": "ana\u2028bia"}}), "login",
     "line separators"),
    (msgpack.packb({"service": "login", "data": {"user": "poison", "clock": 2**64 - 200}}),
     "login", "Lamport clock from 0 to"),
    (msgpack.packb({"service": "login", "data": {"user": "poison", "clock": 2**63 - 1}}),
     "login", "Lamport clock from 0 to"),
    (msgpack.packb({"service": "login", "data": {"user": "poison", "clock": -1}}),
     "login", "Lamport clock from 0 to"),
    (msgpack.packb({"service": "login", "data": {"user": "poison", "clock": 2**53 - 1}}),
     "login", "far ahead of the board"),
]


@pytest.mark.parametrize(("frame", "service", "why"), BAD_FRAMES)
def test_bad_input_gets_erro_and_service_goes_on(cluster: Cluster, frame: bytes,
                                                 service: str, why: str) -> None:
    c = cluster.client()
    reply = c.call(service, raw=frame)
    assert reply["service"] == service
    assert reply["data"]["status"] == "erro"
    assert why in reply["data"]["description"]
    assert len(reply["data"]["description"]) < 200  # never an echo of a huge input
    assert "users" in c.request("users")  # still serving


def test_a_poisoned_clock_is_never_adopted(cluster: Cluster) -> None:
    """One login with a clock near 2^64 once made every process unable to encode anything.
    Refused at the edge, it moves no clock: servers and the reference keep answering."""
    c = cluster.client()
    for clock in (2**64 - 200, 2**63 - 1, 2**53):
        raw = msgpack.packb({"service": "login", "data": {"user": "poison", "clock": clock}})
        assert c.call("login", raw=raw)["data"]["status"] == "erro"
    for name in cluster.names():
        status = cluster.status(name)
        assert status is not None and status["clock"] < 2**40
    assert cluster.ask(cluster.reference, "list") is not None
    assert "poison" not in c.request("users")["users"]
    assert c.request("login", {"user": "after-poison"})["status"] == "sucesso"


def test_huge_echoed_inputs_are_cut(cluster: Cluster) -> None:
    c = cluster.client()
    reply = c.call("x" * 100_000)
    assert reply["data"]["status"] == "erro" and len(reply["data"]["description"]) < 200
    reply = c.request("history", {"channel": "geral", "before": "y" * 100_000})
    assert reply["status"] == "erro" and len(reply["description"]) < 200


def test_oversized_frame_is_dropped_and_service_goes_on(cluster: Cluster) -> None:
    big = msgpack.packb({"service": "login", "data": {"user": "x" * (2 * 1024 * 1024)}})
    c = Client(cluster.frontend, timeout=0.5, retries=1)
    with pytest.raises(Unavailable):
        c.call("login", raw=big)
    c.close()
    fine = cluster.client()
    assert "users" in fine.request("users")


def _files(cluster: Cluster, name: str) -> dict:
    d = cluster.data_dir(name)
    return {f: json.loads((d / f).read_text()) for f in
            ("usuarios.json", "canais.json", "publicacoes.json", "mensagens.json")}


def test_sigkill_every_server_loses_nothing(make_cluster) -> None:
    cluster = make_cluster()
    c = cluster.client()
    c.request("login", {"user": "ana"})
    c.request("channel", {"channel": "geral"})
    sent = [f"m{i}" for i in range(60)]
    for m in sent:
        assert c.request("publish", {"user": "ana", "channel": "geral", "message": m})["status"] \
            == "OK"
    c.request("message", {"src": "ana", "dst": "ana", "message": "nota"})
    for name in cluster.names():  # no time for a snapshot: the journal must carry it
        cluster.kill(name)
    for name in cluster.names():
        cluster.spawn(name)
    cluster.wait_up(cluster.names())
    for _ in range(3):
        posts = c.request("history", {"channel": "geral", "limit": 1000})["messages"]
        assert [p["message"] for p in posts] == sent
        assert c.request("users")["users"] == ["ana"]
        assert c.request("channels")["channels"] == ["geral"]
    # The JSON files catch up within the snapshot interval, identical on every server.
    def files_current() -> bool:
        return all(len(_files(cluster, n)["publicacoes.json"]) == 60 for n in cluster.names())
    wait_for(files_current, 10, "the data files to be rewritten")
    first = _files(cluster, "servidor-1")
    assert first["usuarios.json"][0]["user"] == "ana"
    assert len(first["usuarios.json"][0]["logins"]) == 1
    assert first["mensagens.json"][0]["message"] == "nota"
    for name in cluster.names()[1:]:
        assert _files(cluster, name) == first


def test_reload_merges_a_restored_backup_by_id(make_cluster) -> None:
    cluster = make_cluster(servers=1)
    c = cluster.client()
    c.request("login", {"user": "ana"})
    c.request("channel", {"channel": "geral"})
    c.request("publish", {"user": "ana", "channel": "geral", "message": "um"})
    d = cluster.data_dir("servidor-1")
    wait_for(lambda: len(json.loads((d / "publicacoes.json").read_text())) == 1, 10,
             "the snapshot")
    backup = json.loads((d / "publicacoes.json").read_text())
    # A restored backup: the same entry again plus one this server never had.
    extra = dict(backup[0], message="from backup", id="servidor-9:1", clock=backup[0]["clock"] + 1)
    extra.pop("rid")  # another request, not a retry of the first
    tmp = d / "restore.tmp"
    tmp.write_text(json.dumps(backup + [extra]))
    tmp.replace(d / "publicacoes.json")
    def merged() -> list:
        posts = c.request("history", {"channel": "geral"})["messages"]
        return [p["message"] for p in posts] if len(posts) == 2 else []
    assert wait_for(merged, 10, "the reload to merge the backup") == ["um", "from backup"]
    wait_for(lambda: len(json.loads((d / "publicacoes.json").read_text())) == 2, 10,
             "the file to be rewritten with both entries")
    # Later reload rounds see only our own rewrite: nothing is merged twice.
    assert len(c.request("history", {"channel": "geral"})["messages"]) == 2


def test_a_server_stopped_on_purpose_leaves_the_list_at_once(make_cluster) -> None:
    # SIGTERM (a pod's termination, Ctrl-C): the reference drops it when it says so, not
    # after the 2 s heartbeat expiry; a SIGKILLed one waits out the expiry.
    cluster = make_cluster()

    def listed() -> list[str]:
        return sorted(e["name"] for e in cluster.ask(cluster.reference, "list")["list"])

    assert listed() == ["servidor-1", "servidor-2", "servidor-3"]
    proc = cluster.procs["servidor-3"]
    proc.terminate()
    proc.wait(10)
    assert listed() == ["servidor-1", "servidor-2"]
    log = (cluster.data_dir("reference") / "twistd.log").read_text()
    assert re.search(r"server servidor-3 \(rank \d\) is stopping: off the list", log)
    cluster.kill("servidor-2")
    assert "servidor-2" in listed()  # no word from a killed server: the expiry decides
    # The board goes on without waiting for either.
    assert cluster.client(timeout=3).request("login", {"user": "ana"})["status"] == "sucesso"


def test_a_server_that_lost_its_data_directory_gets_its_name_back(make_cluster) -> None:
    # A new disk or volume: no token file any more. With the board's keys its token is
    # derived from them, so the reference takes its heartbeats and it stays listed.
    cluster = make_cluster(servers=2)
    c = cluster.client()
    c.request("login", {"user": "ana"})
    cluster.kill("servidor-2")
    shutil.rmtree(cluster.data_dir("servidor-2"))
    cluster.spawn("servidor-2")
    cluster.wait_up(["servidor-2"])
    ref_log = cluster.data_dir("reference") / "twistd.log"
    # Four heartbeat intervals past the restart: listed all along, never refused.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        listed = {e["name"] for e in cluster.ask(cluster.reference, "list")["list"]}
        assert listed == {"servidor-1", "servidor-2"}
        time.sleep(0.1)
    assert "refused" not in ref_log.read_text()
    assert (cluster.status("servidor-2") or {}).get("ready")


def test_reference_keeps_ranks_across_restart(make_cluster) -> None:
    cluster = make_cluster(servers=2)
    before = {e["name"]: e["rank"] for e in cluster.ask(cluster.reference, "list")["list"]}
    assert sorted(before.values()) == [1, 2]
    cluster.kill("reference")
    cluster.spawn("reference")
    def listed() -> dict:
        reply = cluster.ask(cluster.reference, "list")
        return {e["name"]: e["rank"] for e in reply["list"]} if reply else {}
    assert wait_for(lambda: len(listed()) == 2 and listed(), 15, "servers to re-list") == before
    r = cluster.ask(cluster.reference, "rank", {"user": "novo"})
    assert r["rank"] == 3
    assert cluster.ask(cluster.reference, "heartbeat", {"user": "never"})["status"] == "unknown"


def test_bbd_up_runs_restarts_and_stops(tmp_path) -> None:
    probe = Cluster(tmp_path / "probe", servers=2)  # only to borrow free ports
    layout = probe.layout
    # The launcher's own run(), on free ports so the test cannot collide with a board
    # already running on this machine's standard ports.
    code = (
        "import sys; from pathlib import Path; from bbd import launcher;"
        f"l = launcher.Layout(Path({str(tmp_path / 'up')!r}), servers=2,"
        f"frontend={layout.frontend}, backend={layout.backend}, xsub={layout.xsub},"
        f"xpub={layout.xpub}, reference={layout.reference}, server_base={layout.server_base},"
        f"broker_status={layout.broker_status}, keys=Path({str(layout.keys)!r}));"
        "sys.exit(launcher.run(l, 0, 3))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        c = Client(probe.frontend, timeout=1, retries=1)
        def serving() -> bool:
            try:
                return "users" in c.request("users")
            except Exception:
                return False
        wait_for(serving, 30, "bbd up to serve")
        pid_file = tmp_path / "up" / "servidor-1" / "twistd.pid"
        def pid() -> int | None:
            try:
                return int(pid_file.read_text())
            except (OSError, ValueError):
                return None
        # Serving means one server is up; on a loaded machine the other may still start.
        old = wait_for(pid, 30, "servidor-1's pid file")
        os.kill(old, signal.SIGKILL)
        def restarted() -> bool:
            try:
                return int(pid_file.read_text()) != old
            except (OSError, ValueError):
                return False
        wait_for(restarted, 30, "procmon to restart the killed server")
        sync = layout.url(layout.server_ports(1)[0])
        wait_for(lambda: (probe.ask(sync, "status") or {}).get("ready"), 30,
                 "the restarted server to serve")
        pids = {name: int((tmp_path / "up" / name / "twistd.pid").read_text())
                for name in ("reference", "proxy", "broker", "servidor-1", "servidor-2")}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        out = proc.stdout.read().decode()
        assert "servidor-2" in out and "broker" in out
        for name, pid in pids.items():
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
            assert not (tmp_path / "up" / name / "twistd.pid").exists(), f"{name} not clean"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_undecodable_json_is_answered_in_json(cluster: Cluster) -> None:
    """A hand-built JSON frame with an unescaped quote, as the original C client made."""
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(cluster.frontend)
    s.send(b'{"service": "login", "data": {"user": "a"b"}}')
    assert s.poll(5000)
    reply = json.loads(s.recv())
    s.close()
    assert reply["data"]["status"] == "erro"
    assert reply["data"]["description"].startswith("frame is not valid JSON")


def test_a_client_of_the_flat_dialect_works(cluster: Cluster) -> None:
    """A client that reads replies at the top level and speaks from/to and
    history_messages/history_channel (PROTOCOL.md, extensions)."""
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(cluster.frontend)

    def ask(service: str, **data: object) -> dict:
        s.send(msgpack.packb({"service": service, "data": data}))
        assert s.poll(5000)
        return msgpack.unpackb(s.recv())

    try:
        for user in ("flat-ana", "flat-bia"):
            reply = ask("login", user=user)
            assert reply["success"] is True and reply["data"]["status"] == "sucesso"
        assert ask("channel", channel="flat-geral")["success"] is True
        again = ask("channel", channel="flat-geral")
        assert again["success"] is False and again["message"] == "channel already exists"
        assert "flat-ana" in ask("users")["users"]
        assert "flat-geral" in ask("channels")["channels"]
        assert ask("publish", user="flat-ana", channel="flat-geral",
                   message="oi")["success"] is True
        sent = ask("message", **{"from": "flat-ana", "to": "flat-bia", "message": "psiu"})
        assert sent["success"] is True and sent["status"] == "OK"
        pubs = ask("history_channel", channel="flat-geral")["publications"]
        assert [p["message"] for p in pubs] == ["oi"]
        msgs = ask("history_messages", user="flat-bia")["messages"]
        assert [(m["from"], m["to"], m["message"]) for m in msgs] == \
            [("flat-ana", "flat-bia", "psiu")]
    finally:
        s.close()
