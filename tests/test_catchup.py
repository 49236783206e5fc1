"""Catch-up as a pure state machine (bbd/catchup.py) on task.Clock, and the server wired to
it: start -> catching up -> ready, a pause detected, a cut-off from the reference and back,
a long catch-up that keeps heartbeating."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest
from twisted.internet import defer, task

from bbd import config
from bbd.catchup import BeginCatchUp, CatchUp, Paused, Phase, ServingChanged
from bbd.services.replication import Peer
from bbd.services.server import BoardServer, ServerConfig
from bbd.services.timers import every
from bbd.sockets import PeerUnavailable

THRESHOLD, CHECK = 2.0, 0.2


def machine() -> tuple[task.Clock, CatchUp]:
    clock = task.Clock()
    return clock, CatchUp(clock, pause_threshold=THRESHOLD, check_interval=CHECK)


def ready_machine() -> tuple[task.Clock, CatchUp]:
    clock, m = machine()
    m.begin()
    m.finished()
    return clock, m


def test_start_catching_up_then_ready() -> None:
    clock, m = machine()
    assert m.phase is Phase.STARTING and not m.ready and not m.heartbeats()
    assert m.next_deadline() is None  # nothing to watch before serving
    assert m.begin() == []  # was not serving: nothing to withdraw
    assert m.catching_up and m.heartbeats() and not m.ready
    clock.advance(7.0)  # a long catch-up
    assert m.finished() == [ServingChanged(True)]
    assert m.ready and m.next_deadline() == 7.0 + CHECK
    clock.advance(CHECK)
    assert m.tick() == []  # the catch-up's own length was no pause


def test_a_pause_is_detected_and_withdraws_the_server() -> None:
    clock, m = ready_machine()
    for _ in range(20):
        clock.advance(CHECK)
        assert m.tick() == []
    clock.advance(THRESHOLD + 3.0)  # SIGSTOP, SIGCONT: the timer fires late
    paused, begin = m.tick()
    assert isinstance(paused, Paused) and paused.gap == pytest.approx(THRESHOLD + 3.0)
    assert begin == BeginCatchUp("a pause")
    assert m.begin() == [ServingChanged(False)]
    clock.advance(10.0)
    assert m.tick() == []  # not serving: no second catch-up on top
    assert m.next_deadline() is None


def test_cut_off_from_the_reference_and_back() -> None:
    _, m = ready_machine()
    m.reference_failed()
    assert m.heartbeat_done(registered=True) == []  # still unreachable: keep serving
    m.reference_answered()
    assert m.heartbeat_done(registered=True) == [BeginCatchUp("a cut-off from the reference")]
    m.begin()
    m.finished()
    assert m.heartbeat_done(registered=True) == []  # once only
    # Written off by the reference: nothing until registered again.
    m.written_off()
    m.reference_answered()
    assert m.heartbeat_done(registered=False) == []
    assert m.heartbeat_done(registered=True) == [BeginCatchUp("a cut-off from the reference")]


def test_a_cut_off_during_a_catch_up_is_owed_afterwards() -> None:
    _, m = machine()
    m.begin()
    m.reference_failed()
    assert m.heartbeat_done(registered=True) == []  # not serving yet
    m.reference_answered()
    m.finished()
    assert m.heartbeat_done(registered=True) == [BeginCatchUp("a cut-off from the reference")]


# -- the server wired to the machine (fake reference and peer, task.Clock) -------------


class FakeFrontend:
    def __init__(self) -> None:
        self.replies: list[tuple[list[bytes], dict]] = []
        self.readiness: list[bool] = []

    def reply(self, envelope: list[bytes], body: bytes) -> None:
        self.replies.append((envelope, msgpack.unpackb(body)))

    def request_id(self, envelope: list[bytes]) -> str | None:
        return None

    def set_ready(self, ready: bool) -> None:
        self.readiness.append(ready)


class Net:
    """The reference and one peer, as ``BoardServer.ask`` sees them."""

    def __init__(self, server: BoardServer) -> None:
        self.server = server
        self.reference_up = True
        self.to_reference: list[str] = []
        self.pulls: list[defer.Deferred] = []

    def ask(self, client: Any, service_: str, data: dict) -> defer.Deferred:
        if client is self.server.registration.client:
            self.to_reference.append(service_)
            if not self.reference_up:
                return defer.fail(PeerUnavailable("reference: timeout"))
            if service_ == "list":
                return defer.succeed({"list": [{"name": "servidor-2", "rank": 2,
                                                "replication": "tcp://peer:2"}]})
            return defer.succeed({"status": "OK"})
        assert service_ == "pull"
        self.pulls.append(defer.Deferred())
        return self.pulls[-1]


def wired_server(tmp_path: Path) -> tuple[BoardServer, task.Clock, FakeFrontend, Net]:
    cfg = ServerConfig(
        name="servidor-1", data_dir=tmp_path, broker="", publish="", subscribe="",
        reference="", bind="127.0.0.1", host="127.0.0.1", sync_port=1, replication_port=2,
        max_bytes=1024 * 1024, timing=config.settings().timing.replace(
            heartbeat_interval=0.5, pause_check_interval=CHECK, heartbeat_expiry=2.0))
    clock = task.Clock()
    server = BoardServer(cfg, clock=clock)
    server.clients.socket = front = FakeFrontend()
    server.registration.client = object()
    server.running = True
    server.registration.rank = 1
    server.replication.peers = {
        "servidor-2": Peer("servidor-2", 2, "tcp://peer:2", "", repl_client=object())}
    net = Net(server)
    server.ask = net.ask
    return server, clock, front, net


def users_request() -> bytes:
    return msgpack.packb({"service": "users", "data": {}})


def test_a_long_catch_up_keeps_heartbeating_then_serves_the_queue(tmp_path: Path) -> None:
    server, clock, front, net = wired_server(tmp_path)
    heartbeat = every(0.5, server.registration.periodic_heartbeat, "heartbeat", clock=clock)
    heartbeat.startService()
    server.replication.catch_up("start")
    assert server.catchup.catching_up and len(net.pulls) == 1
    for _ in range(10):  # 5 s: more than twice the reference's expiry
        clock.advance(0.5)
    server.clients.on_request([b"early"], users_request())
    assert net.to_reference.count("heartbeat") >= 10
    assert front.replies == [] and not server.ready
    net.pulls[0].callback({"ops": [], "more": False})
    assert server.ready and front.readiness[-1] is True
    assert [env for env, _ in front.replies] == [[b"early"]]  # the queue was served
    heartbeat.stopService()


def test_a_pause_makes_the_server_catch_up_before_serving(tmp_path: Path) -> None:
    server, clock, front, net = wired_server(tmp_path)
    server.replication.catch_up("start")
    net.pulls[0].callback({"ops": [], "more": False})
    for _ in range(10):
        clock.advance(CHECK)  # the machine's tick at its deadline: no pause
    assert server.ready and len(net.pulls) == 1
    clock.advance(THRESHOLD + 1.0)  # stopped: the tick fires late
    assert not server.ready and front.readiness[-1] is False and len(net.pulls) == 2
    server.clients.on_request([b"after"], users_request())
    assert front.replies == []  # held until caught up
    net.pulls[1].callback({"ops": [], "more": False})
    assert server.ready and [env for env, _ in front.replies] == [[b"after"]]


def test_a_cut_off_from_the_reference_makes_the_server_catch_up_again(
        tmp_path: Path) -> None:
    server, clock, front, net = wired_server(tmp_path)
    server.replication.catch_up("start")
    net.pulls[0].callback({"ops": [], "more": False})
    net.reference_up = False
    server.registration.periodic_heartbeat()
    assert server.ready and len(net.pulls) == 1  # serving on the last peer list
    net.reference_up = True
    server.registration.periodic_heartbeat()
    assert len(net.pulls) == 2 and not server.ready  # back: the others went on without us
    net.pulls[1].callback({"ops": [], "more": False})
    assert server.ready


def test_anti_entropy_pulls_from_every_peer_only_while_serving(tmp_path: Path) -> None:
    server, clock, front, net = wired_server(tmp_path)
    server.replication.anti_entropy()
    assert net.pulls == []  # not caught up yet: that is the catch-up's job
    server.replication.catch_up("start")
    net.pulls[0].callback({"ops": [], "more": False})
    assert server.ready
    server.replication.anti_entropy()
    assert len(net.pulls) == 2
