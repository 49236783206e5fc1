"""The txZMQ adapter on the real reactor (pytest-twisted), over loopback TCP."""

from __future__ import annotations

import socket

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def factory():
    from bbd import sockets

    f = sockets.make_factory()
    yield f
    f.shutdown()


def echo_server(factory, address: str, answer: bool = True):
    from bbd import sockets

    seen = []

    def on_request(envelope: list[bytes], body: bytes) -> None:
        seen.append(body)
        if answer and body != b"ignore":
            server.reply(envelope, body.upper())

    server = sockets.RouterServer(factory, [sockets.bind(address)], on_request, 1024)
    return server, seen


@defer.inlineCallbacks
def connected_client(factory, address: str):
    """A DealerClient that has had one reply: with IMMEDIATE, sends fail until the
    connection is up."""
    from bbd import sockets

    client = sockets.DealerClient(factory, address, reactor, 1024)
    for _ in range(100):
        try:
            yield client.request(b"warm", 1.0)
            return client
        except sockets.PeerUnavailable:
            yield task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"no connection to {address}")


@pytest_twisted.inlineCallbacks
def test_pipelined_requests_are_matched_to_their_replies(factory) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    echo_server(factory, address)
    client = yield connected_client(factory, address)
    replies = yield defer.gatherResults([client.request(b"m%d" % i, 2.0) for i in range(50)])
    assert replies == [b"M%d" % i for i in range(50)]
    client.close()


@pytest_twisted.inlineCallbacks
def test_unanswered_request_times_out_and_others_still_work(factory) -> None:
    from bbd import sockets

    address = f"tcp://127.0.0.1:{free_port()}"
    echo_server(factory, address)
    client = yield connected_client(factory, address)
    lost = client.request(b"ignore", 0.2)
    ok = yield client.request(b"fine", 2.0)
    assert ok == b"FINE"
    with pytest.raises(sockets.PeerUnavailable, match="no answer in time"):
        yield lost
    client.close()


@pytest_twisted.inlineCallbacks
def test_request_to_nobody_fails_at_once(factory) -> None:
    from bbd import sockets

    client = sockets.DealerClient(factory, f"tcp://127.0.0.1:{free_port()}", reactor, 1024)
    with pytest.raises(sockets.PeerUnavailable, match="not connected"):
        yield client.request(b"hello", 5.0)
    client.close()


@pytest_twisted.inlineCallbacks
def test_a_request_given_connect_wait_is_sent_once_the_peer_comes_up(factory) -> None:
    # A peer just listed or restarting: the request waits for the link, not fails at once.
    from bbd import sockets

    address = f"tcp://127.0.0.1:{free_port()}"
    client = sockets.DealerClient(factory, address, reactor, 1024)
    d = client.request(b"hello", 5.0, connect_wait=5.0)
    yield task.deferLater(reactor, 0.2, lambda: None)
    assert not d.called
    echo_server(factory, address)
    assert (yield d) == b"HELLO"
    client.close()


@pytest_twisted.inlineCallbacks
def test_connect_wait_gives_up_when_nobody_comes(factory) -> None:
    from bbd import sockets

    client = sockets.DealerClient(factory, f"tcp://127.0.0.1:{free_port()}", reactor, 1024)
    start = reactor.seconds()
    with pytest.raises(sockets.PeerUnavailable, match="not connected"):
        yield client.request(b"hello", 5.0, connect_wait=0.3)
    assert 0.3 <= reactor.seconds() - start < 2.0
    client.close()


@pytest_twisted.inlineCallbacks
def test_subscriber_takes_exact_topics_only(factory) -> None:
    from bbd import sockets

    address = f"tcp://127.0.0.1:{free_port()}"
    pub = sockets.Publisher(factory, [sockets.bind(address)])
    got: list[tuple[str, bytes]] = []
    sockets.Subscriber(factory, [sockets.connect(address)], ["ana"],
                       lambda topic, payload: got.append((topic, payload)))
    # Publish until the subscription has reached the publisher (slow joiner).
    for _ in range(200):
        pub.publish("anabela", b"prefix only")
        pub.publish("ana", b"for ana")
        yield task.deferLater(reactor, 0.01, lambda: None)
        if got:
            break
    yield task.deferLater(reactor, 0.05, lambda: None)
    assert got and all(item == ("ana", b"for ana") for item in got)


@pytest_twisted.inlineCallbacks
def test_close_fails_every_waiter_even_when_one_was_cancelled_or_sends_again(factory) -> None:
    """A waiter cancelled by its caller must not stop close() half way (AlreadyCalledError
    left the others with cancelled timers), and an errback that sends again must not break
    the iteration."""
    from bbd import sockets

    address = f"tcp://127.0.0.1:{free_port()}"
    echo_server(factory, address, answer=False)
    client = yield connected_client_ignoring(factory, address)
    cancelled = client.request(b"one", 5.0)
    cancelled.addErrback(lambda f: None)
    cancelled.cancel()
    again: list[defer.Deferred] = []
    second = client.request(b"two", 5.0)
    second.addErrback(lambda f: again.append(client.request(b"three", 5.0)))
    third = client.request(b"four", 5.0)
    client.close()
    with pytest.raises(sockets.PeerUnavailable, match="closed"):
        yield third
    assert len(again) == 1
    with pytest.raises(sockets.PeerUnavailable):
        yield again[0]


@defer.inlineCallbacks
def connected_client_ignoring(factory, address: str):
    """A DealerClient connected to a server that never answers: wait for IMMEDIATE to let a
    send through."""
    from bbd import sockets

    client = sockets.DealerClient(factory, address, reactor, 1024)
    for _ in range(100):
        probe = client.request(b"probe", 0.01)
        probe.addErrback(lambda f: f.value)
        result = yield probe
        if "not connected" not in str(result):
            return client
        yield task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"no connection to {address}")


PEER = """
import sys, zmq
s = zmq.Context().socket(zmq.ROUTER)
s.bind(sys.argv[1])
print("up", flush=True)
while True:
    msg = s.recv_multipart()
    s.send_multipart([*msg[:-1], msg[-1].upper()])
"""


@defer.inlineCallbacks
def wait_until(predicate, timeout: float, what: str):
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        yield task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.parametrize("fault", ["SIGKILL", "SIGSTOP"])
@pytest_twisted.inlineCallbacks
def test_a_watcher_hears_a_peer_die_or_hang(factory, fault: str) -> None:
    """A killed peer's connection closes; a stopped one keeps it open but stops answering
    ZMTP heartbeats, and ZeroMQ drops it: either way the watcher is called."""
    import signal
    import subprocess
    import sys

    from bbd import sockets

    address = f"tcp://127.0.0.1:{free_port()}"
    peer = subprocess.Popen([sys.executable, "-c", PEER, address], stdout=subprocess.PIPE)
    try:
        assert peer.stdout.readline() == b"up\n"
        client = yield connected_client(factory, address)
        lost: list[float] = []
        client.watch(lambda: lost.append(reactor.seconds()))
        yield task.deferLater(reactor, 1.0, lambda: None)  # heartbeats answered: no call
        assert lost == [] and not client.lost
        peer.send_signal(getattr(signal, fault))
        # A request out when the link drops fails then, not at its (long) timeout: its
        # reply could only have come back over that connection.
        pending = client.request(b"unanswered", 60.0)
        failures: list = []
        pending.addErrback(failures.append)
        yield wait_until(lambda: lost, 10, "the watcher to be called")
        yield wait_until(lambda: failures, 1, "the request out to fail")
        failures[0].trap(sockets.PeerUnavailable)
        # Known lost (an election asks such a peer without waiting for its link) until
        # the link is back: a resumed peer's handshake clears it.
        assert client.lost
        if fault == "SIGSTOP":
            peer.send_signal(signal.SIGCONT)
            yield wait_until(lambda: not client.lost, 10, "the link to come back")
        client.close()
    finally:
        peer.kill()
        peer.wait()


@pytest_twisted.inlineCallbacks
def test_multipart_frames_arrive_whole_and_a_failing_handler_stops_nothing(factory) -> None:
    """The adapter's own read and send loops (plain int flags): every frame of a message,
    in order, and a handler that raises on one message still gets the next ones."""
    from bbd import sockets

    address = f"tcp://127.0.0.1:{free_port()}"
    seen: list[list[bytes]] = []

    def on_request(envelope: list[bytes], body: bytes) -> None:
        seen.append([*envelope, body])
        if body == b"boom":
            raise RuntimeError("handler failed")
        server.reply(envelope, b"%d/" % len(envelope) + body)

    server = sockets.RouterServer(factory, [sockets.bind(address)], on_request, 1 << 16)
    client = yield connected_client(factory, address)
    failed = client.request(b"boom", 0.3)
    big = b"x" * 900  # within the client's MAXMSGSIZE (1024)
    replies = yield defer.gatherResults([client.request(b"m%d" % i, 2.0) for i in range(20)]
                                        + [client.request(big, 2.0)])
    # Envelope: routing id, correlation id, empty delimiter.
    assert replies == [b"3/m%d" % i for i in range(20)] + [b"3/" + big]
    with pytest.raises(sockets.PeerUnavailable):
        yield failed
    bodies = [m[-1] for m in seen if m[-1] != b"warm"]
    assert bodies == [b"boom", *(b"m%d" % i for i in range(20)), big]
    assert all(len(m) == 4 and m[2] == b"" for m in seen)
    client.close()
