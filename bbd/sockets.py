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
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from txzmq import ZmqConnection, ZmqEndpoint, ZmqEndpointType, ZmqFactory

log = Logger()

HIGH_WATER_MARK = 10_000


class PeerUnavailable(Exception):
    """A request could not be sent or was not answered in time."""


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
        super().__init__(factory, [connect(address)],
                         {zmq.IMMEDIATE: 1, zmq.MAXMSGSIZE: max_bytes, **(security or {})})

    def request(self, body: bytes, timeout: float) -> defer.Deferred:
        corr = b"%d" % next(self._ids)
        d: defer.Deferred = defer.Deferred()
        if not self.send_parts([corr, b"", body]):
            d.errback(PeerUnavailable(f"{self.address}: not connected"))
            return d
        call = self.clock.callLater(timeout, self._expire, corr)
        self._waiting[corr] = (d, call)
        return d

    def _expire(self, corr: bytes) -> None:
        d, _ = self._waiting.pop(corr)
        d.errback(PeerUnavailable(f"{self.address}: no answer in time"))

    def messageReceived(self, message: list[bytes]) -> None:
        if len(message) < 2:
            return
        waiting = self._waiting.pop(message[0], None)
        if waiting is None:
            return  # late reply to a request that already timed out
        d, call = waiting
        call.cancel()
        d.callback(message[-1])

    def close(self) -> None:
        for d, call in self._waiting.values():
            call.cancel()
            d.errback(PeerUnavailable(f"{self.address}: closed"))
        self._waiting.clear()
        if self.socket is not None:
            self.shutdown()


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
    """SUB with exact-topic filtering: ZeroMQ matches prefixes, we compare whole topics."""

    socketType = zmq.SUB

    def __init__(self, factory: ZmqFactory, endpoints: list[ZmqEndpoint], topics: list[str],
                 on_publication: Callable[[str, bytes], None]) -> None:
        self.topics = set(topics)
        self.on_publication = on_publication
        super().__init__(factory, endpoints)
        for topic in topics:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))

    def messageReceived(self, message: list[bytes]) -> None:
        if len(message) != 2:
            return
        try:
            topic = message[0].decode("utf-8")
        except UnicodeDecodeError:
            return
        if topic in self.topics:
            try:
                self.on_publication(topic, message[1])
            except Exception:
                log.failure("unhandled error while handling a publication")
