"""Prometheus metrics: what a server and the dashboard export at ``/metrics``.

Each process has its own ``CollectorRegistry`` (never the global one, so tests can build
several). Counters and the latency histogram are fed by a hook per handled client request;
everything a ``status`` reply already says (Lamport clock, clock offset, coordinator,
operations applied, journal size) is read at scrape time by a collector, so nothing is
computed between scrapes. The page is served on the reactor's thread (see ``resource``) by a small
``twisted.web`` site of its own (``--metrics-port``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

WRITES = ("login", "channel", "publish", "message")
# Writes wait for fsync and every live peer's ack: from about a millisecond to the peer
# timeout (1 s) when a peer is paused.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


class ServerMetrics:
    """A board server's metrics. ``status`` returns the server's ``status`` reply data;
    ``journal`` is the path of its journal (its size is read at scrape time)."""

    def __init__(self, status: Callable[[], dict[str, Any]], journal: str | os.PathLike) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("bbd_requests", "Client requests handled, by service and "
                                "reply status", ["service", "status"], registry=self.registry)
        self.write_latency = Histogram("bbd_write_latency_seconds", "Time from a write's "
                                       "arrival to its reply (journal, replication, acks)",
                                       ["service"], buckets=LATENCY_BUCKETS,
                                       registry=self.registry)
        self.registry.register(_ServerCollector(status, journal))

    def observe(self, service: str, status: Any, seconds: float) -> None:
        """The hook called once per client request answered."""
        self.requests.labels(service, str(status)).inc()
        if service in WRITES:
            self.write_latency.labels(service).observe(seconds)


class _ServerCollector(Collector):
    def __init__(self, status: Callable[[], dict[str, Any]], journal: str | os.PathLike):
        self.status = status
        self.journal = journal

    def collect(self) -> Iterator[Metric]:
        s = self.status()
        name = str(s.get("name"))
        gauges = [
            ("bbd_lamport_clock", "Lamport clock", s.get("clock")),
            ("bbd_clock_offset_seconds", "Physical clock minus the host's clock",
             s.get("offset")),
            ("bbd_operations_applied", "Operations applied (replication lag across servers: "
             "max(bbd_operations_applied) - bbd_operations_applied)", s.get("applied")),
            ("bbd_ready", "1 once caught up and serving clients", bool(s.get("ready"))),
            ("bbd_coordinator", "1 if this server is the coordinator",
             s.get("coordinator") == name),
            ("bbd_berkeley_rounds", "Berkeley rounds run as coordinator",
             s.get("berkeley_rounds")),
            ("bbd_peers_up", "Peers answering replication",
             sum(1 for up in (s.get("peers") or {}).values() if up)),
        ]
        try:
            gauges.append(("bbd_journal_bytes", "Size of the journal",
                           os.path.getsize(self.journal)))
        except OSError:
            pass
        for metric, doc, value in gauges:
            number = float(value) if isinstance(value, bool) else _number(value)
            if number is not None:
                g = GaugeMetricFamily(metric, doc, labels=["server"])
                g.add_metric([name], number)
                yield g


class DashboardCollector(Collector):
    """The dashboard's view of every server, from ``BoardWatch.topology()``, including the
    replication lag only a process watching all servers can compute."""

    def __init__(self, topology: Callable[[], dict[str, Any]]) -> None:
        self.topology = topology

    def collect(self) -> Iterator[Metric]:
        t = self.topology()
        fields = [
            ("bbd_server_up", "1 if the server answers status", lambda r: r["state"] != "down"),
            ("bbd_lamport_clock", "Lamport clock", lambda r: r["lamport"]),
            ("bbd_clock_offset_seconds", "Physical clock minus the host's clock",
             lambda r: r["offset"]),
            ("bbd_operations_applied", "Operations applied", lambda r: r["applied"]),
            ("bbd_replication_lag_operations", "Operations behind the most advanced server",
             lambda r: r["lag"]),
            ("bbd_coordinator", "1 for the coordinator", lambda r: r["coordinator"]),
            ("bbd_operations_per_second", "Operations originated per second",
             lambda r: r["throughput"]),
        ]
        for metric, doc, get in fields:
            g = GaugeMetricFamily(metric, doc, labels=["server"])
            for row in t["servers"]:
                value = get(row)
                number = float(value) if isinstance(value, bool) else _number(value)
                if number is not None:
                    g.add_metric([row["name"]], number)
            yield g
        g = GaugeMetricFamily("bbd_private_messages_seen", "Private messages published "
                              "(counted, never shown)")
        g.add_metric([], float(t["private_messages"]))
        yield g


def resource(registry: CollectorRegistry) -> Any:
    """The ``/metrics`` page, rendered on the reactor's thread.

    Not ``prometheus_client.twisted.MetricsResource``: that one runs the exposition in the
    reactor's thread pool, so our collectors would read the server's state (and advance its
    slewing physical clock) from another thread while the reactor changes it. Rendering a
    few dozen lines takes well under a millisecond, so the reactor thread is the safe place.
    """
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
    from twisted.web import resource as web_resource

    class Metrics(web_resource.Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
            return generate_latest(registry)

    return Metrics()


def site_service(registry: CollectorRegistry, port: int, interface: str) -> Any:
    """A ``/metrics`` page on its own port, as a service to add to a daemon's tree."""
    from twisted.application import internet
    from twisted.web import resource as web_resource
    from twisted.web import server

    root = web_resource.Resource()
    root.putChild(b"metrics", resource(registry))
    return internet.TCPServer(port, server.Site(root), interface=interface)


def attach_to_server(board: Any, port: int, interface: str) -> Any:
    """Wire a board server's metrics: the per-request hook and the page's service."""
    metrics = ServerMetrics(lambda: board._status(None), board.journal.path)
    board.clients.responder.observe = metrics.observe
    return site_service(metrics.registry, port, interface)
