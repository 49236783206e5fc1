"""The one thin adapter over txZMQ: every daemon's ZeroMQ socket comes from here.

It guards against txZMQ's known pitfalls: bounded queues (its default high-water mark is
unlimited), socket options set before any endpoint, multipart publications ``[topic,
payload]`` instead of its one-frame ``tag\\0message``, our own timeouts on an injected clock,
and replies routed by envelope so a late or duplicate reply is simply dropped. ``security``
takes ``bbd.auth.server_options`` / ``client_options`` (CURVE), set before any endpoint.

Importing this module installs Twisted's default reactor (txZMQ does so): import it only
where a daemon starts, never from a plugin module or a pure core.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import zmq
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from txzmq import ZmqConnection, ZmqEndpoint, ZmqEndpointType, ZmqFactory
from zmq.utils.monitor import parse_monitor_message

from bbd.protocol import PeerUnavailable  # raised here; defined there, free of txZMQ

log = Logger()

HIGH_WATER_MARK = 10_000
# ZMTP heartbeats on every request socket to a peer: a peer whose process died closes its
# TCP connection at once; one that hangs (SIGSTOP: its connections stay open) stops
# answering PINGs, which ZeroMQ's I/O thread answers even while the peer's reactor is busy,
# and ZeroMQ drops the connection after HEARTBEAT_TIMEOUT. A watcher (``watch``) hears both.
HEARTBEAT_IVL_MS = 200
HEARTBEAT_TIMEOUT_MS = 700
HEARTBEAT_TTL_MS = 2000
# How often a request given ``connect_wait`` tries again to send while its link comes up.
CONNECT_POLL = 0.01
_monitor_ids = itertools.count(1)
# Plain ints: pyzmq's flags are enum.Flag members, and every ``|`` or ``&`` on one builds a
# new member through EnumType.__call__ (a few microseconds each, several times a message).
_NOBLOCK = int(zmq.NOBLOCK)
_SEND_MORE = int(zmq.SNDMORE) | _NOBLOCK
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_SEND_ONLY = frozenset({int(zmq.PUB), int(zmq.PUSH)})


def bind(address: str) -> ZmqEndpoint:
    return ZmqEndpoint(ZmqEndpointType.bind, address)


def connect(address: str) -> ZmqEndpoint:
    return ZmqEndpoint(ZmqEndpointType.connect, address)


def make_factory() -> ZmqFactory:
    factory = ZmqFactory()
    factory.lingerPeriod = 0  # a stopping daemon must not hang on unsent messages
    return factory


class _Connection(ZmqConnection):
    highWaterMark = HIGH_WATER_MARK

    def __init__(self, factory: ZmqFactory, endpoints: list[ZmqEndpoint],
                 options: dict[int, Any] | None = None) -> None:
        # txZMQ may read in its constructor: subclasses set their state before calling us.
        super().__init__(factory)
        for option, value in (options or {}).items():
            self.socket.setsockopt(option, value)
        self.addEndpoints(endpoints)

    def send_parts(self, parts: list[bytes]) -> bool:
        """Send one multipart message without blocking; False if the queue is full or no
        peer is connected (the caller decides: drop, fail the request, retry later)."""
        if self.socket is None:
            return False
        try:
            self.send(parts)
        except zmq.Again:
            return False
        return True

    # txZMQ's send and doRead, with plain int flags and without twisted.python.log's
    # callWithLogger context around each message (every messageReceived here catches and
    # logs its own errors); otherwise the same steps.
    def send(self, message: list[bytes] | bytes) -> None:
        sock = self.socket
        if isinstance(message, bytes):
            sock.send(message, _NOBLOCK)
        else:
            # A multipart message is queued whole or not at all: only its first frame can
            # meet a full queue (EAGAIN), and then nothing of it was queued.
            for part in message[:-1]:
                sock.send(part, _SEND_MORE)
            sock.send(message[-1], _NOBLOCK)
        # ZeroMQ's descriptor signals edges only, and a send may consume the edge of an
        # incoming message: if one is waiting, read it on the next reactor turn (txZMQ
        # schedules that read after every send; one look at the events costs less).
        if self.read_scheduled is None and sock.get(_EVENTS) & _POLLIN:
            self.read_scheduled = reactor.callLater(0, self.doRead)

    def doRead(self) -> None:
        scheduled = self.read_scheduled
        if scheduled is not None:
            if not scheduled.called:
                scheduled.cancel()
            self.read_scheduled = None
        if self.socketType in _SEND_ONLY:
            if self.factory is not None:
                self.socket.get(_EVENTS)  # rearms the descriptor's edge; nothing to read
            return
        while self.factory is not None:  # None once shut down
            sock = self.socket
            if not sock.get(_EVENTS) & _POLLIN:
                return
            # Frames without copy carry their own "more" flag: no option read per frame
            # (each ``get`` costs microseconds, several times a message).
            try:
                frame = sock.recv(_NOBLOCK, copy=False)
            except zmq.Again:
                continue  # the message was taken meanwhile: look at the events again
            message = [frame.bytes]
            while frame.more:
                frame = sock.recv(_NOBLOCK, copy=False)
                message.append(frame.bytes)
            try:
                self.messageReceived(message)
            except Exception:
                log.failure("unhandled error while handling a message")


class RouterServer(_Connection):
    """A ROUTER that answers requests from REQ, DEALER or a broker's DEALER backend.

    The body is the last frame; everything before it (routing ids, a REQ's empty
    delimiter, a correlation id) is the envelope and goes back unchanged with the reply.
    """

    socketType = zmq.ROUTER

    def __init__(self, factory: ZmqFactory, endpoints: list[ZmqEndpoint],
                 on_request: Callable[[list[bytes], bytes], None], max_bytes: int,
                 security: dict[int, Any] | None = None) -> None:
        self.on_request = on_request
        super().__init__(factory, endpoints, {zmq.MAXMSGSIZE: max_bytes, **(security or {})})

    def messageReceived(self, message: list[bytes]) -> None:
        if len(message) < 2:
            return  # nothing to route a reply to
        try:
            self.on_request(message[:-1], message[-1])
        except Exception:
            log.failure("unhandled error while serving a request")

    def reply(self, envelope: list[bytes], body: bytes) -> None:
        if not self.send_parts([*envelope, body]):
            log.warn("reply dropped: send queue full or requester gone")

    def request_id(self, envelope: list[bytes]) -> str | None:
        return None  # a plain ROUTER behind a round-robin relay gets no broker request id


class BrokerWorker(_Connection):
    """A server's link to the readiness broker (frames in ``bbd.loadbalance``).

    It states its readiness and credit at once when they change and again every
    ``heartbeat`` as its heartbeat, and keeps what the broker last said about it (routing
    to it or not, requests in flight) for the server's status. Requests arrive with the
    broker's request id as their one-frame envelope.

    A heartbeat that comes more than PAUSE_GAP late means the process was stopped or
    starved: it says BUSY for HOLD seconds first, time for the server to notice the pause
    and start its catch-up (which keeps it BUSY) before the broker sends it work again.
    """

    socketType = zmq.DEALER
    PAUSE_GAP = 1.0
    HOLD = 0.5

    def __init__(self, factory: ZmqFactory, address: str,
                 on_request: Callable[[list[bytes], bytes], None], *, name: str, credit: int,
                 clock: IReactorTime, heartbeat: float, ready: bool, max_bytes: int,
                 security: dict[int, Any] | None = None) -> None:
        from twisted.internet import task

        from bbd import loadbalance as lb

        self.lb = lb
        self.on_request = on_request
        self.address = address
        self.name = name.encode("utf-8")
        self.credit = b"%d" % credit
        self.clock = clock
        self.ready = ready
        self.view: dict[str, Any] = {"routing": False, "in_flight": 0, "heard": None}
        self._last_beat: float | None = None
        self._hold_until = 0.0
        super().__init__(factory, [connect(address)],
                         {zmq.MAXMSGSIZE: max_bytes, **(security or {})})
        self._beat = task.LoopingCall(self._heartbeat)
        self._beat.clock = clock
        self._beat.start(heartbeat)

    def _heartbeat(self) -> None:
        now = self.clock.seconds()
        if self._last_beat is not None and now - self._last_beat > self.PAUSE_GAP:
            log.warn("no heartbeat to the broker for {gap:.1f} s (paused?): busy for a moment",
                     gap=now - self._last_beat)
            self._hold_until = now + self.HOLD
        self._last_beat = now
        self._send_state()

    def _send_state(self) -> None:
        ready = self.ready and self.clock.seconds() >= self._hold_until
        kind = self.lb.READY if ready else self.lb.BUSY
        self.send_parts([self.lb.PROTOCOL, kind, self.credit, self.name])

    def set_ready(self, ready: bool) -> None:
        """Ready for requests (True) or alive but catching up (False); told at once."""
        if ready != self.ready:
            self.ready = ready
            self._send_state()

    def messageReceived(self, message: list[bytes]) -> None:
        if len(message) < 2 or message[0] != self.lb.PROTOCOL:
            return
        if message[1] == self.lb.REQUEST and len(message) == 4:
            try:
                self.on_request([message[2]], message[3])
            except Exception:
                log.failure("unhandled error while serving a request")
        elif message[1] == self.lb.HEARTBEAT and len(message) == 4:
            self.view = {"routing": message[2] == b"1", "in_flight": int(message[3]),
                         "heard": self.clock.seconds()}

    def reply(self, envelope: list[bytes], body: bytes) -> None:
        if not self.send_parts([self.lb.PROTOCOL, self.lb.REPLY, envelope[0], body]):
            log.warn("reply dropped: broker queue full")

    def request_id(self, envelope: list[bytes]) -> str | None:
        """The broker's id of this request: the request id of a client that sent none."""
        return envelope[0].decode("ascii", "replace")

    def close(self) -> None:
        """Say goodbye (the broker re-sends what we hold at once) and stop heartbeats."""
        if self._beat.running:
            self._beat.stop()
        self.send_parts([self.lb.PROTOCOL, self.lb.BYE])


class DealerClient(_Connection):
    """Pipelined request/reply to one ROUTER peer, correlated by an id frame.

    A timeout only fails the request's Deferred; a late reply finds no waiter and is
    dropped. IMMEDIATE stops ZeroMQ from queueing for a peer that is not connected, so a
    request to a dead peer fails at once instead of being delivered stale later.
    """

    socketType = zmq.DEALER

    def __init__(self, factory: ZmqFactory, address: str, clock: IReactorTime,
                 max_bytes: int, security: dict[int, Any] | None = None) -> None:
        self.clock = clock
        self.address = address
        self._ids = itertools.count(1)
        self._waiting: dict[bytes, tuple[defer.Deferred, Any]] = {}
        self._on_lost: Callable[[], None] | None = None
        self._monitor: _Monitor | None = None
        # Watched links only: the connection dropped and has not come back since (the peer
        # died or hangs), as opposed to one not made yet (a peer just listed or starting).
        self.lost = False
        super().__init__(factory, [connect(address)],
                         {zmq.IMMEDIATE: 1, zmq.MAXMSGSIZE: max_bytes,
                          zmq.HEARTBEAT_IVL: HEARTBEAT_IVL_MS,
                          zmq.HEARTBEAT_TIMEOUT: HEARTBEAT_TIMEOUT_MS,
                          zmq.HEARTBEAT_TTL: HEARTBEAT_TTL_MS, **(security or {})})

    def watch(self, on_lost: Callable[[], None] | None) -> None:
        """Call ``on_lost`` each time the connection to the peer drops (its process died,
        or it stopped answering heartbeats); None stops the calls. The socket monitor is
        made on first use and lives as long as the socket."""
        self._on_lost = on_lost
        if on_lost is None or self._monitor is not None or self.socket is None:
            return
        address = f"inproc://bbd-monitor-{next(_monitor_ids)}"
        self.socket.monitor(address, zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self._monitor = _Monitor(self.factory, address, self._event)

    def _event(self, event: int) -> None:
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.lost = False
        elif event == zmq.EVENT_DISCONNECTED:
            self.lost = True
            # A reply can only come back over the connection its request went out on:
            # every request in flight is lost with it, so it fails now, not at its timeout.
            self._fail_waiting("connection dropped")
            if self._on_lost is not None:
                self._on_lost()

    def request(self, body: bytes, timeout: float, connect_wait: float = 0.0) -> defer.Deferred:
        """Send one request; its Deferred fires with the reply's body or fails with
        PeerUnavailable after ``timeout``. Without a connection the request fails at once,
        unless ``connect_wait`` gives the link that long (within ``timeout``) to come up:
        a peer just listed, or just restarted, is usually a handshake away, not dead."""
        corr = b"%d" % next(self._ids)
        d: defer.Deferred = defer.Deferred()
        now = self.clock.seconds()
        self._send_request(d, corr, body, now + timeout, now + min(connect_wait, timeout))
        return d

    def _send_request(self, d: defer.Deferred, corr: bytes, body: bytes, deadline: float,
                      give_up: float) -> None:
        if d.called:
            return  # cancelled by its caller while waiting for the link
        if self.send_parts([corr, b"", body]):
            call = self.clock.callLater(max(0.0, deadline - self.clock.seconds()),
                                        self._expire, corr)
            self._waiting[corr] = (d, call)
        elif self.socket is None:
            d.errback(PeerUnavailable(f"{self.address}: closed"))
        elif self.clock.seconds() >= give_up:
            d.errback(PeerUnavailable(f"{self.address}: not connected"))
        else:
            self.clock.callLater(CONNECT_POLL, self._send_request, d, corr, body, deadline,
                                 give_up)

    def _expire(self, corr: bytes) -> None:
        d, _ = self._waiting.pop(corr)
        if not d.called:
            d.errback(PeerUnavailable(f"{self.address}: no answer in time"))

    def messageReceived(self, message: list[bytes]) -> None:
        if len(message) < 2:
            return
        waiting = self._waiting.pop(message[0], None)
        if waiting is None:
            return  # late reply to a request that already timed out
        d, call = waiting
        if call.active():
            call.cancel()
        if not d.called:  # the caller may have cancelled it
            d.callback(message[-1])

    def close(self) -> None:
        self._on_lost = None
        if self._monitor is not None:
            if self.socket is not None:
                self.socket.disable_monitor()
            self._monitor.shutdown()
            self._monitor = None
        if self.socket is not None:
            self.shutdown()
        self._fail_waiting("closed")

    def _fail_waiting(self, why: str) -> None:
        # Take the table first: an errback may send again or close again, and one that
        # raised must not leave half the waiters with cancelled timers behind.
        waiting, self._waiting = self._waiting, {}
        for d, call in waiting.values():
            if call.active():
                call.cancel()
            if not d.called:
                d.errback(PeerUnavailable(f"{self.address}: {why}"))


class _Monitor(_Connection):
    """The PAIR end of a socket monitor: one event per message, read on the reactor."""

    socketType = zmq.PAIR

    def __init__(self, factory: ZmqFactory, address: str,
                 on_event: Callable[[int], None]) -> None:
        self.on_event = on_event
        super().__init__(factory, [connect(address)])
        # ZeroMQ's descriptor signals edges only: read what the connect left pending, or
        # the reactor never hears of the events queued behind it.
        self.doRead()

    def messageReceived(self, message: list[bytes]) -> None:
        try:
            event = parse_monitor_message(message)["event"]
        except Exception:
            return  # not a monitor event: nothing to report
        try:
            self.on_event(event)
        except Exception:
            log.failure("unhandled error while handling a socket event")


class Publisher(_Connection):
    socketType = zmq.PUB

    def __init__(self, factory: ZmqFactory, endpoints: list[ZmqEndpoint],
                 security: dict[int, Any] | None = None) -> None:
        super().__init__(factory, endpoints, security)

    def publish(self, topic: str, payload: bytes) -> bool:
        return self.send_parts([topic.encode("utf-8"), payload])

    def messageReceived(self, message: list[bytes]) -> None:
        pass  # PUB sockets receive nothing


class Subscriber(_Connection):
    """SUB with exact-topic filtering: ZeroMQ matches prefixes, we compare whole topics.
    ``topics=None`` takes every publication (the dashboard's view of the board)."""

    socketType = zmq.SUB

    def __init__(self, factory: ZmqFactory, endpoints: list[ZmqEndpoint],
                 topics: list[str] | None,
                 on_publication: Callable[[str, bytes], None]) -> None:
        self.topics = set(topics) if topics is not None else None
        self.on_publication = on_publication
        super().__init__(factory, endpoints)
        for topic in topics if topics is not None else [""]:  # "": every prefix
            self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))

    def messageReceived(self, message: list[bytes]) -> None:
        if len(message) != 2:
            return
        try:
            topic = message[0].decode("utf-8")
        except UnicodeDecodeError:
            return
        if self.topics is None or topic in self.topics:
            try:
                self.on_publication(topic, message[1])
            except Exception:
                log.failure("unhandled error while handling a publication")
