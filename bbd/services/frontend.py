"""The client front end of a board server: the link to the broker, the queue held while
catching up, and the responder that answers clients.

A part of the server daemon with no pointer back to the server: it is handed the request
handlers (service name -> handler: the write path and the reads), whether the server is
ready, a tick of the catch-up machine, and a hook for each request served.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bbd import auth
from bbd.lamport import LamportClock
from bbd.logs import Logger
from bbd.services.responder import Responder

log = Logger()

# A client request queued during catch-up is dropped once it has waited this many request
# timeouts (its client has retried by then); beyond MAX_QUEUED, requests are refused at once.
MAX_QUEUED = 1000

Handler = Callable[[Any], Any]  # a Request in, reply data (or a Deferred of it) out


class ClientFrontEnd:
    def __init__(self, cfg: Any, clock: Any, lamport: LamportClock, now: Callable[[], float],
                 handlers: Mapping[str, Handler], ready: Callable[[], bool],
                 resumed_from_pause: Callable[[], bool],
                 served: Callable[[int], None]) -> None:
        self.cfg = cfg  # ServerConfig
        self.clock = clock
        self.responder = Responder(lamport, now, log, clients=True)
        self.handlers = handlers
        self.ready = ready
        self.resumed_from_pause = resumed_from_pause  # a tick of the catch-up machine
        self.served = served  # called with the count of requests served so far
        self.socket: Any = None  # the broker worker link (or a ROUTER), from open on
        self.queued: list[tuple[float, list[bytes], bytes]] = []  # held during catch-up
        self.handled = 0  # client requests served: the dashboard's requests/s

    def open(self, factory: Any) -> None:
        """Connect to the broker: once caught up at start."""
        from bbd import sockets

        # The broker's backend is one of the board's internal links: CURVE when keys are on.
        security = auth.client_options(self.cfg.keys)
        if self.cfg.routing == "round-robin":
            self.socket = sockets.RouterServer(factory, [sockets.connect(self.cfg.broker)],
                                               self.on_request, self.cfg.max_bytes, security)
        else:
            self.socket = sockets.BrokerWorker(
                factory, self.cfg.broker, self.on_request, name=self.cfg.name,
                credit=self.cfg.credit, clock=self.clock,
                heartbeat=self.cfg.timing.broker_heartbeat, ready=self.ready(),
                max_bytes=self.cfg.max_bytes, security=security)

    def close(self) -> None:
        goodbye = getattr(self.socket, "close", None)  # the worker link says BYE
        if goodbye is not None:
            goodbye()

    def view(self) -> dict[str, Any] | None:
        """What the broker last said of us: routing here, in flight (the worker link only)."""
        return getattr(self.socket, "view", None)

    def set_ready(self, serving: bool) -> None:
        tell = getattr(self.socket, "set_ready", None)  # the worker link only
        if tell is not None:
            tell(serving)  # the broker is told at once
        if serving:
            self.serve_queued()

    def on_request(self, envelope: list[bytes], body: bytes) -> None:
        self.resumed_from_pause()  # a tick of the catch-up machine: paused?
        if not self.ready():
            self._queue(envelope, body)
            return
        self.handled += 1
        self.responder.handle(lambda out: self.socket.reply(envelope, out), body,
                              self.handlers, self.socket.request_id(envelope))
        self.served(self.handled)

    def serve_queued(self) -> None:
        queued, self.queued = self.queued, []
        oldest = self.clock.seconds() - self.cfg.timing.request_timeout
        fresh = [(envelope, body) for at, envelope, body in queued if at >= oldest]
        if len(fresh) < len(queued):
            log.info("dropped {n} client requests queued during catch-up for longer than "
                     "{t} s: their clients have retried by now", n=len(queued) - len(fresh),
                     t=self.cfg.timing.request_timeout)
        for envelope, body in fresh:
            self.on_request(envelope, body)

    def _queue(self, envelope: list[bytes], body: bytes) -> None:
        """Hold a client request until catch-up ends, within bounds."""
        if len(self.queued) >= MAX_QUEUED:
            self.responder.refuse(
                lambda out: self.socket.reply(envelope, out), body,
                "server is catching up with its peers; try again")
            return
        self.queued.append((self.clock.seconds(), envelope, body))
