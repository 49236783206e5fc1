"""A blocking Python client for BulletInBoard (used by tests, tools and benchmarks).

Requests use the lazy-pirate pattern: a REQ socket, a poll with a timeout, and on timeout
the socket is closed and recreated and the request sent again with the same request id, so
the servers apply a retried write once and answer it with the original result.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import msgpack
import zmq

from bbd import config
from bbd.lamport import LamportClock


class Unavailable(Exception):
    """No answer after every retry."""


class Client:
    def __init__(self, endpoint: str, *, timeout: float | None = None, retries: int = 3,
                 context: zmq.Context | None = None,
                 security: dict[int, Any] | None = None) -> None:
        """``security``: socket options for an internal port, ``bbd.auth.client_options``."""
        self.endpoint = endpoint
        self.security = security or {}
        self.timeout = config.timing("request_timeout") if timeout is None else timeout
        self.retries = retries
        self.ctx = context or zmq.Context.instance()
        self.lamport = LamportClock()
        self.sock: zmq.Socket | None = None

    def _connect(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        for option, value in self.security.items():
            sock.setsockopt(option, value)
        sock.connect(self.endpoint)
        return sock

    def call(self, service: str, data: dict[str, Any] | None = None, *,
             rid: str | None = None, raw: bytes | None = None) -> dict[str, Any]:
        """Send one request (or ``raw`` bytes as they are); the whole reply map."""
        body = dict(data or {})
        body.setdefault("id", rid or uuid.uuid4().hex)
        body["timestamp"] = time.time()
        for _ in range(self.retries):
            body["clock"] = self.lamport.tick()
            frame = raw if raw is not None else msgpack.packb(
                {"service": service, "data": body}, use_bin_type=True)
            if self.sock is None:
                self.sock = self._connect()
            self.sock.send(frame)
            if self.sock.poll(int(self.timeout * 1000), zmq.POLLIN):
                msg = _decode_reply(self.sock.recv())
                clock = msg.get("data", {}).get("clock")
                if isinstance(clock, int):
                    self.lamport.observe(clock)
                return msg
            # Lazy pirate: a REQ socket that lost its reply is stuck; start a fresh one.
            self.sock.close(0)
            self.sock = None
        raise Unavailable(f"no answer from {self.endpoint} to {service} "
                          f"after {self.retries} tries")

    def request(self, service: str, data: dict[str, Any] | None = None, **kw: Any) -> dict:
        """The reply's ``data`` map."""
        return self.call(service, data, **kw)["data"]

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _decode_reply(reply: bytes) -> dict[str, Any]:
    """Replies come in the request's format: JSON for a JSON request, else MessagePack."""
    if reply[:1] == b"{":
        try:
            return json.loads(reply)
        except ValueError:
            pass
    return msgpack.unpackb(reply, raw=False)


def ask_once(endpoint: str, service: str, data: dict[str, Any] | None = None,
             timeout: float = 1.0, security: dict[int, Any] | None = None
             ) -> dict[str, Any] | None:
    """One try, no retry: the reply's data, or None if nothing answered in time (for
    probes: status, readiness)."""
    c = Client(endpoint, timeout=timeout, retries=1, security=security)
    try:
        return c.request(service, data)
    except Unavailable:
        return None
    finally:
        c.close()


class Subscriber:
    """Publications on exactly the subscribed topics (ZeroMQ itself matches prefixes)."""

    def __init__(self, endpoint: str, topics: list[str] | tuple[str, ...] = (), *,
                 context: zmq.Context | None = None) -> None:
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.topics: set[str] = set()
        self.lamport = LamportClock()
        for topic in topics:
            self.subscribe(topic)

    def subscribe(self, topic: str) -> None:
        self.topics.add(topic)
        self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))

    def receive(self, timeout: float) -> tuple[str, dict[str, Any]] | None:
        """The next publication on a subscribed topic, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000), zmq.POLLIN):
                return None
            parts = self.sock.recv_multipart()
            if len(parts) != 2:
                continue
            topic = parts[0].decode("utf-8", "replace")
            if topic not in self.topics:
                continue
            payload = msgpack.unpackb(parts[1], raw=False)
            if isinstance(payload.get("clock"), int):
                self.lamport.observe(payload["clock"])
            return topic, payload

    def close(self) -> None:
        self.sock.close(0)
