"""The readiness broker's service and the servers' worker link, on the real reactor over
loopback TCP: frames as docs/protocol.md describes them, and a stop that does not hang."""

from __future__ import annotations

import socket
import time

import msgpack
import pytest
import pytest_twisted
import zmq
from twisted.internet import defer, reactor, task

from bbd import loadbalance as lb


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def receive(sock: zmq.Socket, timeout: float = 5.0) -> list[bytes]:
    """Poll without blocking the reactor (the code under test runs on it)."""
    deadline = time.monotonic() + timeout
    while not sock.poll(0):
        if time.monotonic() > deadline:
            raise AssertionError("nothing received")
        yield sleep(0.005)
    return sock.recv_multipart()


@pytest.fixture
def zctx():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def factory():
    from bbd import sockets

    f = sockets.make_factory()
    yield f
    f.shutdown()


@pytest_twisted.inlineCallbacks
def test_worker_link_speaks_the_backend_protocol(factory, zctx) -> None:
    from bbd import sockets

    address = f"tcp://127.0.0.1:{free_port()}"
    broker = zctx.socket(zmq.ROUTER)
    broker.bind(address)
    seen: list[tuple[list[bytes], bytes]] = []
    worker = sockets.BrokerWorker(factory, address, lambda env, body: seen.append((env, body)),
                                  name="servidor-1", credit=7, clock=reactor, heartbeat=0.05,
                                  ready=True, max_bytes=1024)
    wid, *state = yield receive(broker)
    assert state == [lb.PROTOCOL, lb.READY, b"7", b"servidor-1"]
    worker.set_ready(False)  # catching up: said at once, not at the next heartbeat
    frames = yield receive(broker)
    assert frames[1:3] == [lb.PROTOCOL, lb.BUSY]
    broker.send_multipart([wid, lb.PROTOCOL, lb.REQUEST, b"bk-x-1", b"body"])
    broker.send_multipart([wid, lb.PROTOCOL, lb.HEARTBEAT, b"1", b"3"])
    for _ in range(100):
        if seen and worker.view["heard"] is not None:
            break
        yield sleep(0.01)
    assert seen == [([b"bk-x-1"], b"body")]
    assert worker.request_id(seen[0][0]) == "bk-x-1"
    assert (worker.view["routing"], worker.view["in_flight"]) == (True, 3)
    worker.reply([b"bk-x-1"], b"answer")
    while True:
        frames = yield receive(broker)
        if frames[2] == lb.REPLY:
            break
    assert frames[1:] == [lb.PROTOCOL, lb.REPLY, b"bk-x-1", b"answer"]
    worker.close()
    while True:
        frames = yield receive(broker)
        if frames[2] == lb.BYE:
            break


@pytest_twisted.inlineCallbacks
def test_broker_service_routes_answers_status_and_stops_at_once(zctx) -> None:
    from bbd.services.balancer import BalancerService

    front, back, status = (f"tcp://127.0.0.1:{free_port()}" for _ in range(3))
    svc = BalancerService(front, back, status, 1 << 20, lb.Settings(warmup=0.0))
    svc.startService()
    try:
        worker = zctx.socket(zmq.DEALER)
        worker.connect(back)
        worker.send_multipart([lb.PROTOCOL, lb.READY, b"4", b"w1"])
        client = zctx.socket(zmq.REQ)
        client.connect(front)
        client.send(b"hello")
        while True:
            frames = yield receive(worker)
            if frames[1] == lb.REQUEST:
                break
        assert frames[3] == b"hello" and frames[2].startswith(b"bk-")
        worker.send_multipart([lb.PROTOCOL, lb.REPLY, frames[2], b"HELLO"])
        reply = yield receive(client)
        assert reply == [b"HELLO"]
        probe = zctx.socket(zmq.REQ)
        probe.connect(status)
        probe.send(msgpack.packb({"service": "status", "data": {}}))
        answer = msgpack.unpackb((yield receive(probe))[0])
        w, = answer["data"]["workers"]
        assert (w["name"], w["routing"], w["in_flight"]) == ("w1", True, 0)
        assert answer["data"]["replies"] == 1
    finally:
        began = time.monotonic()
        svc.stopService()
        took = time.monotonic() - began
    assert took < 0.5, f"stopping took {took:.2f} s"
    again = zctx.socket(zmq.ROUTER)  # its ports are free again
    again.bind(front)
    again.close(0)


@pytest_twisted.inlineCallbacks
def test_worker_link_says_busy_for_a_moment_after_a_pause(factory, zctx) -> None:
    from bbd import sockets

    address = f"tcp://127.0.0.1:{free_port()}"
    broker = zctx.socket(zmq.ROUTER)
    broker.bind(address)
    clock = task.Clock()
    sockets.BrokerWorker(factory, address, lambda env, body: None, name="s", credit=1,
                         clock=clock, heartbeat=0.25, ready=True, max_bytes=1024)
    kinds = []
    for step in (0.0, 3.0, 0.25, 0.3):  # start; a 3 s stop; within the hold; after it
        clock.advance(step)
        kinds.append((yield receive(broker))[2])
    assert kinds == [lb.READY, lb.BUSY, lb.BUSY, lb.READY]
