"""Prometheus metrics: the request hook of the Responder, what a server and the dashboard
export, and the page rendered on the reactor's thread."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.exposition import generate_latest
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.web.test.requesthelper import DummyRequest

from bbd import metrics, protocol
from bbd.lamport import LamportClock
from bbd.protocol import ProtocolError
from bbd.services.responder import Responder
from bbd.watch import BoardWatch


def _status() -> dict:
    return {"name": "servidor-1", "clock": 42, "offset": -0.25, "applied": 7, "ready": True,
            "coordinator": "servidor-1", "berkeley_rounds": 3,
            "peers": {"servidor-2": True, "servidor-3": False}}


def test_server_metrics_from_status_hook_and_journal(tmp_path: Path) -> None:
    journal = tmp_path / "journal.log"
    journal.write_bytes(b"x" * 123)
    m = metrics.ServerMetrics(_status, journal)
    responder = Responder(LamportClock(), lambda: 0.0, Logger(), clients=True)
    responder.observe = m.observe
    sent: list[bytes] = []

    def fail(req):
        raise ProtocolError("no", "publish")

    handlers = {"publish": lambda req: {"status": "OK"}, "channel": fail}
    for service in ("publish", "publish", "channel"):
        body = protocol.encode(protocol.message(service, {"user": "a"}, clock=1, timestamp=0))
        responder.handle(sent.append, body, handlers)
    assert len(sent) == 3
    text = generate_latest(m.registry).decode()
    assert 'bbd_requests_total{service="publish",status="OK"} 2.0' in text
    assert 'bbd_requests_total{service="channel",status="erro"} 1.0' in text
    assert 'bbd_write_latency_seconds_count{service="publish"} 2.0' in text
    for line in ['bbd_lamport_clock{server="servidor-1"} 42.0',
                 'bbd_clock_offset_seconds{server="servidor-1"} -0.25',
                 'bbd_operations_applied{server="servidor-1"} 7.0',
                 'bbd_coordinator{server="servidor-1"} 1.0',
                 'bbd_peers_up{server="servidor-1"} 1.0',
                 'bbd_journal_bytes{server="servidor-1"} 123.0']:
        assert line in text


def test_dashboard_metrics_include_replication_lag() -> None:
    w = BoardWatch(Clock().seconds)
    w.reference_list([{"name": "a", "rank": 1, "sync": "x"}, {"name": "b", "rank": 2,
                                                             "sync": "y"}])
    w.server_status("a", {"ready": True, "applied": 10, "clock": 5, "offset": 0.0})
    w.server_status("b", {"ready": True, "applied": 4, "clock": 6, "offset": 0.0})
    w.server_failed("b", "gone")
    w.server_status("b", {"ready": True, "applied": 4, "clock": 6, "offset": 0.0})
    w.sample()
    page = metrics.resource(_registry(w)).render_GET(DummyRequest([b""]))
    text = page.decode()
    assert 'bbd_replication_lag_operations{server="b"} 6.0' in text
    assert 'bbd_server_up{server="a"} 1.0' in text
    assert "bbd_private_messages_seen 0.0" in text


def _registry(w: BoardWatch):
    from prometheus_client import CollectorRegistry

    r = CollectorRegistry()
    r.register(metrics.DashboardCollector(w.topology))
    return r
