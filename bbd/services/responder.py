"""Request dispatch shared by every daemon port: decode, stamp, reply exactly once.

Whatever a handler does (return a dict, return a Deferred, raise ProtocolError, crash), the
requester gets one reply in its own format (MessagePack or JSON), with the Lamport clock
ticked for the send. A ROUTER keeps nothing per request, so a forgotten reply would only
leave the client waiting: hence the single exit point here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from bbd import protocol
from bbd.lamport import LamportClock
from bbd.protocol import ProtocolError, Request

Handler = Callable[[Request], "dict[str, Any] | defer.Deferred"]


class Responder:
    """``clients=True`` is the client port's: a client's clock may lead the board's only by
    MAX_CLOCK_LEAP, and replies also carry their fields flat (the dialect extension)."""

    def __init__(self, lamport: LamportClock, now: Callable[[], float], log: Logger,
                 clients: bool = False) -> None:
        self.lamport = lamport
        self.now = now
        self.log = log
        self.clients = clients
        # Metrics hook (bbd.metrics): (service, reply status, seconds since arrival), once
        # per request answered through handle().
        self.observe: Callable[[str, Any, float], None] | None = None

    def handle(self, send: Callable[[bytes], None], body: bytes,
               handlers: dict[str, Handler], fallback_id: str | None = None) -> None:
        start = time.perf_counter() if self.observe is not None else None
        try:
            req = protocol.decode(body)
            if fallback_id is not None:
                req = Request(req.service, req.data, req.fmt, fallback_id)
            handler = handlers.get(req.service)
            if handler is None:
                raise ProtocolError(f"unknown service {protocol.quote(req.service)}",
                                    req.service, req.fmt)
            ahead_of = self.lamport.value if self.clients else None
            self.lamport.observe(protocol.received_clock(req.data, req.service, ahead_of))
        except ProtocolError as e:
            self.log.info("rejected {service}: {why}", service=e.service, why=e.description)
            self._send(send, e.service, protocol.error_data(e.service, e.description), e.fmt,
                       start)
            return
        # A handler that answers at once is answered at once: no Deferred for it. A reply
        # that fails to encode or send is answered as a failure, as from the handler.
        try:
            result = handler(req)
            if not isinstance(result, defer.Deferred):
                self._send(send, req.service, result, req.fmt, start)
                return
        except Exception:
            self._failed(Failure(), send, req, start)
            return
        result.addCallback(self._answer, send, req, start)
        result.addErrback(self._failed, send, req, start)

    def _answer(self, data: dict[str, Any], send: Callable[[bytes], None], req: Request,
                start: float | None) -> None:
        self._send(send, req.service, data, req.fmt, start)

    def refuse(self, send: Callable[[bytes], None], body: bytes, why: str) -> None:
        """Answer a request with ``erro`` without serving it (e.g. no room to queue it)."""
        try:
            req = protocol.decode(body)
        except ProtocolError as e:
            self._send(send, e.service, protocol.error_data(e.service, e.description), e.fmt)
            return
        self._send(send, req.service, protocol.error_data(req.service, why), req.fmt)

    def _failed(self, failure: Any, send: Callable[[bytes], None], req: Request,
                start: float | None = None) -> None:
        if failure.check(ProtocolError):
            why = failure.value.description
        else:
            self.log.failure("error serving {service}", failure, service=req.service)
            why = "internal error; the request was not applied"
        self._send(send, req.service, protocol.error_data(req.service, why), req.fmt, start)

    def _send(self, send: Callable[[bytes], None], service: str, data: dict[str, Any],
              fmt: protocol.Format, start: float | None = None) -> None:
        msg = protocol.message(service, data, clock=self.lamport.tick(), timestamp=self.now())
        if self.clients:
            protocol.flatten(msg)
        send(protocol.encode(msg, fmt))
        if start is not None and self.observe is not None:
            self.observe(service, data.get("status"), time.perf_counter() - start)


def call(client: Any, service: str, data: dict[str, Any], *, lamport: LamportClock,
         now: Callable[[], float], timeout: float, connect_wait: float = 0.0) -> defer.Deferred:
    """One request to a daemon port through a ``DealerClient``; fires with the reply's data
    (Lamport merged), fails with PeerUnavailable or ProtocolError."""
    msg = protocol.message(service, data, clock=lamport.tick(), timestamp=now())
    d = client.request(protocol.encode(msg), timeout, connect_wait)

    def decoded(body: bytes) -> dict[str, Any]:
        try:
            reply = protocol.unpack(body)
            data = reply["data"]
            if not isinstance(data, dict):
                raise TypeError
        except Exception:
            raise ProtocolError(f"undecodable reply to {service}", service) from None
        lamport.observe(protocol.received_clock(data, service))
        return data

    return d.addCallback(decoded)
