"""The dashboard daemon's wiring with fakes on task.Clock (bounded polling, immediate
pushes) and the launcher's demo control with a fake process monitor."""

from __future__ import annotations

import json
import signal
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from bbd import demo, protocol
from bbd.services.dashboard import DashboardConfig, EventStreams, Watcher
from bbd.watch import BoardWatch


class FakeDealer:
    def __init__(self, address: str) -> None:
        self.address = address
        self.pending: list[tuple[str, defer.Deferred]] = []

    def request(self, body: bytes, timeout: float, connect_wait: float = 0.0) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.pending.append((protocol.decode(body).service, d))
        return d

    def answer(self, data: dict[str, Any]) -> None:
        service, d = self.pending.pop(0)
        d.callback(protocol.encode(protocol.message(service, data, clock=1, timestamp=0)))

    def close(self) -> None:
        pass


class FakeStreams(EventStreams):
    def __init__(self, watch: BoardWatch) -> None:
        super().__init__(watch)
        self.sent: list[tuple[str, Any]] = []

    def send(self, name: str, payload: Any) -> None:
        self.sent.append((name, payload))


def make() -> tuple[Clock, Watcher, dict[str, FakeDealer], FakeStreams]:
    clock = Clock()
    watch = BoardWatch(clock.seconds)
    streams = FakeStreams(watch)
    cfg = DashboardConfig(reference="ref", subscribe="sub", broker="brk", port=0,
                          interface="")
    w = Watcher(cfg, watch, streams, clock=clock)
    dealers: dict[str, FakeDealer] = {}

    def dealer(address: str) -> FakeDealer:
        dealers[address] = FakeDealer(address)
        return dealers[address]

    w._dealer = dealer  # type: ignore[method-assign]
    w.factory = object()
    w.reference, w.broker = dealer("ref"), dealer("brk")
    w.born["reference"] = w.born["broker"] = 0.0
    return clock, w, dealers, streams


def test_one_request_outstanding_per_peer_and_a_grace_to_connect() -> None:
    clock, w, dealers, streams = make()
    w.poll()  # the sockets are brand new: nothing asked yet
    assert dealers["ref"].pending == [] and dealers["brk"].pending == []
    clock.advance(0.5)
    w.poll()
    assert [s for s, _ in dealers["ref"].pending] == ["list"]
    assert [s for s, _ in dealers["brk"].pending] == ["channels"]
    clock.advance(0.5)
    w.poll()  # the reference has not answered: no second request piles up
    assert len(dealers["ref"].pending) == 1
    dealers["ref"].answer({"list": [{"name": "s1", "rank": 1, "sync": "tcp://s1"}]})
    clock.advance(0)
    assert any(n == "event" and p["kind"] == "join" for n, p in streams.sent)
    clock.advance(0.5)
    w.poll()  # the new server's socket gets its grace first
    assert dealers["tcp://s1"].pending == []
    clock.advance(0.5)
    w.poll()
    assert [s for s, _ in dealers["tcp://s1"].pending] == ["status"]
    assert len(dealers["brk"].pending) == 1  # channels only every 5 s, and still out


def test_a_server_that_stops_answering_is_pushed_at_once() -> None:
    clock, w, dealers, streams = make()
    w.watch.reference_list([{"name": "s1", "rank": 1, "sync": "tcp://s1"}])
    w.watch.server_status("s1", {"ready": True})
    w.watch.publication("servers", {"service": "election", "data": {"coordinator": "s1"}})
    clock.advance(1)
    w.poll()
    clock.advance(0.5)
    w.poll()
    streams.sent.clear()
    _, d = dealers["tcp://s1"].pending.pop(0)
    d.errback(RuntimeError("tcp://s1: not connected"))
    clock.advance(0)  # the same reactor turn: no wait for the next tick
    pushed = [p for n, p in streams.sent if n == "topology"]
    assert pushed and pushed[-1]["servers"][0]["state"] == "down"
    assert pushed[-1]["coordinator"] is None


class StreamRequest(DummyRequest):
    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None


def frames(request: StreamRequest) -> list[str]:
    text = b"".join(request.written).decode()
    return [line[len("event: "):] for line in text.splitlines() if line.startswith("event: ")]


def test_a_page_that_stops_reading_is_skipped_then_resynchronised() -> None:
    clock = Clock()
    watch = BoardWatch(clock.seconds)
    streams = EventStreams(watch)
    request = StreamRequest([b""])
    streams.render_GET(request)
    streams.send("tick", {"n": 1})
    assert frames(request) == ["snapshot", "tick"]
    request.producer.pauseProducing()  # its send buffer is full
    for n in range(1000):
        streams.send("tick", {"n": n})
    assert frames(request) == ["snapshot", "tick"]  # nothing piled up for it
    request.producer.resumeProducing()
    streams.send("tick", {"n": 2})
    assert frames(request) == ["snapshot", "tick", "snapshot", "tick"]
    streams.close_all()
    assert streams.open == [] and request.finished


class FakeTransport:
    def __init__(self, pid: int) -> None:
        self.pid = pid


class FakeProto:
    def __init__(self, pid: int) -> None:
        self.transport = FakeTransport(pid)


class FakeMonitor:
    def __init__(self) -> None:
        self.processes = {"servidor-1": object()}
        self.protocols = {"servidor-1": FakeProto(4242)}
        self.log: list[tuple[str, str]] = []

    def removeProcess(self, name: str) -> None:
        self.log.append(("remove", name))
        del self.processes[name]

    def stopProcess(self, name: str) -> None:
        self.log.append(("stop", name))

    def addProcess(self, name: str, argv: list[str], env: dict, cwd: str) -> None:
        self.log.append(("add", name))
        self.processes[name] = object()


def post(control: demo.DemoControl, path: str) -> tuple[int, dict]:
    req = DummyRequest([p.encode() for p in path.split("/")])
    req.method = b"POST"
    body = control.render_POST(req)
    return req.responseCode or 200, json.loads(body)


def test_demo_control_signals_and_keeps_a_killed_server_down(monkeypatch) -> None:
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(demo.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    monitor = FakeMonitor()
    control = demo.DemoControl(monitor, {"servidor-1": demo.Managed(["twistd"], {}, "/")})
    assert post(control, "pause/servidor-1")[0] == 200
    assert post(control, "resume/servidor-1")[0] == 200
    assert post(control, "kill/servidor-1")[0] == 200
    assert sent == [(4242, signal.SIGSTOP), (4242, signal.SIGCONT), (4242, signal.SIGKILL)]
    assert ("remove", "servidor-1") in monitor.log  # no automatic restart
    code, body = post(control, "restart/servidor-1")
    assert code == 409 and "still exiting" in body["error"]  # its process not reaped yet
    del monitor.protocols["servidor-1"]
    assert post(control, "restart/servidor-1") == (200, {"result": "started again"})
    assert post(control, "kill/referencia")[0] == 400
    assert post(control, "explode/servidor-1")[0] == 400
