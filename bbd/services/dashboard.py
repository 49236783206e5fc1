"""The dashboard daemon: watches the board like any of its processes and serves one live
page (``twistd -n bbd-dashboard``).

What it asks, at a bounded rate, and never more than one request outstanding per peer:
the reference's ``list`` and each server's ``status`` (sync port) every ``poll`` seconds,
the broker's ``channels`` every ``channels_every`` seconds. What it hears: every
publication of the proxy (``servers`` announcements, posts, private messages, which it
only counts). All of it goes into ``bbd.watch.BoardWatch``; this module only wires it to
sockets, timers and the web.

The page gets its data by Server-Sent Events on ``/events``: a ``snapshot`` when it
connects, then ``tick`` (topology and the newest chart points) every ``poll`` seconds and
``topology``, ``event``, ``post``, ``private``, ``channel`` as soon as they happen (a dead
server or a new coordinator does not wait for the next tick).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.application import internet, service
from twisted.internet import reactor
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python import usage
from twisted.web import resource, server, static
from zope.interface import implementer

from bbd import protocol
from bbd.lamport import LamportClock
from bbd.options import SecureDaemonOptions, tcp_local
from bbd.services.responder import call
from bbd.watch import BoardWatch

log = Logger()

WEB = Path(__file__).resolve().parent.parent / "web"
MAX_STREAMS = 32  # open pages at once; more get 503
# A new socket is given this long to connect before its first request: with IMMEDIATE a
# request on a socket still connecting fails at once, which would read as "down".
CONNECT_GRACE = 0.3


@dataclass
class DashboardConfig:
    reference: str
    subscribe: str
    broker: str | None
    port: int
    interface: str
    poll: float = 0.5
    status_timeout: float = 0.8
    channels_every: float = 5.0
    max_bytes: int = 1 << 20
    demo_control: str | None = None
    keys: Any = None  # the board's CURVE keys (bbd.auth.Keys); None: --no-auth


class Watcher(service.Service):
    """Polls and listens; feeds the core; pushes what changed to the open pages."""

    def __init__(self, cfg: DashboardConfig, watch: BoardWatch, streams: EventStreams,
                 clock: Any = reactor) -> None:
        self.cfg = cfg
        self.watch = watch
        self.streams = streams
        self.clock = clock
        self.lamport = LamportClock()
        self.factory: Any = None
        self.reference: Any = None
        self.broker: Any = None
        self.subscriber: Any = None
        self.sync: dict[str, tuple[str, Any]] = {}  # server -> (endpoint, DealerClient)
        self.busy: set[str] = set()  # peers with a request outstanding
        self.born: dict[str, float] = {}  # when each peer's socket was made
        self._flush_call: Any = None
        self._channels_at = float("-inf")

    # -- sockets: every socket of the dashboard is made by these two methods ---------

    def _dealer(self, address: str, internal: bool = True) -> Any:
        """A request socket to one board port: the reference or a sync port (internal
        links, CURVE with the board's keys), or the broker's open client port."""
        from bbd import auth, sockets

        security = auth.client_options(self.cfg.keys) if internal else None
        return sockets.DealerClient(self.factory, address, self.clock, self.cfg.max_bytes,
                                    security)

    def _subscriber(self, address: str) -> Any:
        """Every publication of the proxy. Authentication, when it exists, goes here."""
        from bbd import sockets

        return sockets.Subscriber(self.factory, [sockets.connect(address)], None,
                                  self._publication)

    # -- life ------------------------------------------------------------------------

    def startService(self) -> None:
        from bbd import sockets

        super().startService()
        self.factory = sockets.make_factory()
        self.reference = self._dealer(self.cfg.reference)
        self.born["reference"] = self.born["broker"] = self.clock.seconds()
        if self.cfg.broker:
            self.broker = self._dealer(self.cfg.broker, internal=False)
        self.subscriber = self._subscriber(self.cfg.subscribe)
        log.info("dashboard watching reference {reference}, proxy {proxy}, broker {broker}",
                 reference=self.cfg.reference, proxy=self.cfg.subscribe,
                 broker=self.cfg.broker)

    def stopService(self) -> None:
        super().stopService()
        for _, client in self.sync.values():
            client.close()
        for client in (self.reference, self.broker):
            if client is not None:
                client.close()
        if self.subscriber is not None:
            self.subscriber.shutdown()
        if self.factory is not None:
            self.factory.shutdown()
            self.factory = None

    # -- polling ---------------------------------------------------------------------

    def poll(self) -> None:
        """One round: sample what the last answers said, push it, ask again."""
        if self.factory is None:
            return
        points = self.watch.sample()
        self.streams.send("tick", {"topology": self.watch.topology(), "points": points})
        self._ask("reference", self.reference, "list", self._listed,
                  self.watch.reference_failed)
        for name, view in list(self.watch.servers.items()):
            if view.sync:
                client = self._sync_client(name, view.sync)
                self._ask(name, client, "status",
                          lambda data, n=name: self.watch.server_status(n, data),
                          lambda why, n=name: self.watch.server_failed(n, why))
        now = self.clock.seconds()
        if self.broker is not None and now - self._channels_at >= self.cfg.channels_every \
                and self._ask("broker", self.broker, "channels",
                              lambda data: self.watch.channel_list(data.get("channels") or []),
                              self.watch.broker_failed):
            self._channels_at = now

    def _sync_client(self, name: str, endpoint: str) -> Any:
        known = self.sync.get(name)
        if known is not None and known[0] == endpoint:
            return known[1]
        if known is not None:
            known[1].close()
        client = self._dealer(endpoint)
        self.sync[name] = (endpoint, client)
        self.born[name] = self.clock.seconds()
        # Forget sockets of servers the core no longer keeps (it bounds how many).
        for gone in [n for n in self.sync if n not in self.watch.servers]:
            self.sync.pop(gone)[1].close()
            self.born.pop(gone, None)
        return client

    def _ask(self, key: str, client: Any, service_: str, ok: Any, failed: Any) -> bool:
        """Send one request unless one is still out to that peer; True if sent."""
        if key in self.busy:
            return False  # the previous request is still out: never pile up on a slow peer
        if self.clock.seconds() - self.born.get(key, float("-inf")) < CONNECT_GRACE:
            return False
        self.busy.add(key)
        d = call(client, service_, {}, lamport=self.lamport, now=self.clock.seconds,
                 timeout=self.cfg.status_timeout)

        def answered(data: dict[str, Any]) -> None:
            if data.get("status") == "erro":
                failed(str(data.get("description") or "erro"))
            else:
                ok(data)

        d.addCallbacks(answered, lambda f: failed(f.getErrorMessage()))
        d.addErrback(lambda f: log.failure("dashboard: handling a {service} answer",
                                           f, service=service_))
        d.addBoth(lambda _: (self.busy.discard(key), self._soon()))
        return True

    def _listed(self, data: dict[str, Any]) -> None:
        entries = data.get("list")
        self.watch.reference_list(entries if isinstance(entries, list) else [])

    def _publication(self, topic: str, payload: bytes) -> None:
        try:
            req = protocol.unpack(payload)
        except Exception:
            return
        if isinstance(req, dict):
            self.watch.publication(topic, req)
            self._soon()

    # -- pushing ---------------------------------------------------------------------

    def _soon(self) -> None:
        """Push what the core has to say, once per reactor turn however many inputs."""
        if self._flush_call is None or not self._flush_call.active():
            self._flush_call = self.clock.callLater(0, self.flush)

    def flush(self) -> None:
        for name, payload in self.watch.drain():
            self.streams.send(name, payload)
        if self.watch.changed:
            self.watch.changed = False
            self.streams.send("topology", self.watch.topology())


@implementer(IPushProducer)
class _Page:
    """One open page. Twisted pauses it when the connection's send buffer is full (a tab
    that stopped reading): events are then skipped, not buffered, and the page gets a fresh
    snapshot when it reads again. So a stuck page costs a bounded buffer, never memory
    that grows with time."""

    def __init__(self, request: Any) -> None:
        self.request = request
        self.paused = False
        self.missed = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = True


class EventStreams(resource.Resource):
    """``/events``: Server-Sent Events to every open page."""

    isLeaf = True

    def __init__(self, watch: BoardWatch) -> None:
        super().__init__()
        self.watch = watch
        self.open: list[_Page] = []

    def render_GET(self, request: Any) -> Any:
        if len(self.open) >= MAX_STREAMS:
            request.setResponseCode(503)
            return b"too many open dashboards\n"
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        page = _Page(request)
        request.registerProducer(page, True)
        request.write(b"retry: 1000\n\n")
        request.write(_event("snapshot", self.watch.snapshot()))
        self.open.append(page)
        request.notifyFinish().addBoth(lambda _: self._closed(page))
        return server.NOT_DONE_YET

    def _closed(self, page: _Page) -> None:
        if page in self.open:
            self.open.remove(page)

    def send(self, name: str, payload: Any) -> None:
        if not self.open:
            return
        frame = _event(name, payload)
        for page in list(self.open):
            if page.paused:
                page.missed = True
                continue
            try:
                if page.missed:
                    page.missed = False
                    page.request.write(_event("snapshot", self.watch.snapshot()))
                page.request.write(frame)
            except Exception:
                self._closed(page)

    def close_all(self) -> None:
        for page in list(self.open):
            try:
                page.request.unregisterProducer()
                page.request.finish()
            except Exception:
                pass
        self.open.clear()


def _event(name: str, payload: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


class JsonResource(resource.Resource):
    isLeaf = True

    def __init__(self, produce: Any) -> None:
        super().__init__()
        self.produce = produce

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(self.produce()).encode()


class DemoResource(resource.Resource):
    """``POST /api/demo/<action>/<server>``: forwarded to the launcher's local control
    (``bbd up --demo``), which owns the processes."""

    isLeaf = True

    def __init__(self, control: str | None) -> None:
        super().__init__()
        self.control = control

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"demo": self.control is not None}).encode()

    def render_POST(self, request: Any) -> Any:
        request.setHeader(b"content-type", b"application/json")
        if self.control is None:
            request.setResponseCode(404)
            return b'{"error": "demo mode is off (bbd up --demo)"}'
        parts = [p.decode("utf-8", "replace") for p in request.postpath if p]
        if len(parts) != 2:
            request.setResponseCode(400)
            return b'{"error": "POST /api/demo/<action>/<server>"}'
        from twisted.web.client import Agent, readBody

        url = f"{self.control.rstrip('/')}/{parts[0]}/{parts[1]}".encode()
        d = Agent(reactor).request(b"POST", url)

        def got(response: Any) -> Any:
            request.setResponseCode(response.code)
            return readBody(response)

        def done(body: bytes) -> None:
            request.write(body)
            request.finish()

        def failed(f: Any) -> None:
            request.setResponseCode(502)
            request.write(json.dumps({"error": f.getErrorMessage()}).encode())
            request.finish()

        d.addCallback(got).addCallbacks(done, failed)
        return server.NOT_DONE_YET


def site(watch: BoardWatch, streams: EventStreams, demo_control: str | None) -> server.Site:
    from prometheus_client import CollectorRegistry

    from bbd import metrics

    root = static.File(str(WEB))  # index.html, dashboard.js, dashboard.css
    root.putChild(b"events", streams)
    api = resource.Resource()
    api.putChild(b"state", JsonResource(watch.snapshot))
    api.putChild(b"demo", DemoResource(demo_control))
    root.putChild(b"api", api)
    registry = CollectorRegistry()
    registry.register(metrics.DashboardCollector(watch.topology))
    root.putChild(b"metrics", metrics.resource(registry))
    return server.Site(root)


class Options(SecureDaemonOptions):
    optParameters = SecureDaemonOptions.optParameters + [
        ["port", None, None, "HTTP port of the page (default: the dashboard port)", int],
        ["interface", None, "", "interface to listen on (default: all)"],
        ["reference", None, tcp_local("reference"), "reference server endpoint"],
        ["subscribe", None, tcp_local("xpub"), "proxy's XPUB endpoint"],
        ["broker", None, tcp_local("frontend"), "broker's client endpoint, for the channel "
         "list ('' : do not ask)"],
        ["poll", None, 0.5, "seconds between status polls of each server", float],
        ["demo-control", None, None, "the launcher's demo control URL (bbd up --demo)"],
    ]

    config_ports = {"port": "dashboard"}

    def postOptions(self) -> None:
        super().postOptions()
        if not 0.1 <= self["poll"] <= 60:
            raise usage.UsageError("--poll must be between 0.1 and 60 seconds")


class _Streams(service.Service):
    def __init__(self, streams: EventStreams) -> None:
        self.streams = streams

    def stopService(self) -> None:
        super().stopService()
        self.streams.close_all()


def makeService(options: Options) -> service.MultiService:
    from bbd.services.timers import every

    cfg = DashboardConfig(
        reference=options["reference"], subscribe=options["subscribe"],
        broker=options["broker"] or None, port=options["port"],
        interface=options["interface"], poll=options["poll"],
        max_bytes=options["max-bytes"], demo_control=options["demo-control"],
        keys=options["auth"],
        status_timeout=min(0.8, options["timing"].peer_timeout))
    top = service.MultiService()
    watch = BoardWatch(reactor.seconds)
    streams = EventStreams(watch)
    watcher = Watcher(cfg, watch, streams)
    watcher.setServiceParent(top)
    _Streams(streams).setServiceParent(top)
    every(cfg.poll, watcher.poll, "dashboard poll").setServiceParent(top)
    internet.TCPServer(cfg.port, site(watch, streams, cfg.demo_control),
                       interface=cfg.interface).setServiceParent(top)
    log.info("dashboard on http://{host}:{port}/", host=cfg.interface or "localhost",
             port=cfg.port)
    return top
