"""The readiness broker against real daemons: a hung server and a killed one cost the
clients nothing, and every write is applied exactly once, also for clients that send no
request id (the broker's own id makes its re-sends safe)."""

from __future__ import annotations

import contextlib
import io
import json
import signal
import time
from collections import Counter

import msgpack
import zmq

from bbd import cli
from bbd.localcluster import Cluster, wait_for
from tests.test_replication import Writers, read_files, setup_board, wait_converged


class PlainWriters(Writers):
    """Clients as the standard describes them: a REQ socket, no ``id`` in ``data``, 2 s
    per request and no retry, so any request the board does not answer in time counts
    as failed (``failed`` lists them)."""

    def __init__(self, cluster: Cluster, n: int, timeout: float = 2.0) -> None:
        super().__init__(cluster, n)
        self.timeout_ms = int(timeout * 1000)
        self.failed: list[str] = []  # type: ignore[assignment]
        self.slowest = 0.0
        self.ctx = zmq.Context()

    def _run(self, k: int) -> None:
        sock = None
        i = 0
        while not self.stop.is_set():
            if sock is None:
                sock = self.ctx.socket(zmq.REQ)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(self.cluster.frontend)
            i += 1
            text = f"p{k}-{i}"
            data = {"user": "ana", "channel": "geral", "message": text,
                    "timestamp": time.time(), "clock": 0}
            began = time.monotonic()
            sock.send(msgpack.packb({"service": "publish", "data": data}))
            if not sock.poll(self.timeout_ms):
                sock.close(0)
                sock = None
                with self.lock:
                    self.failed.append(text)
                continue
            reply = msgpack.unpackb(sock.recv())
            with self.lock:
                self.slowest = max(self.slowest, time.monotonic() - began)
                if reply["data"].get("status") == "OK":
                    self.acked.append(text)
        if sock is not None:
            sock.close(0)

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.ctx.term()


def assert_each_applied_once(files: dict, acked: list[str], failed: list[str]) -> None:
    counts = Counter(p["message"] for p in json.loads(files["publicacoes.json"]))
    dupes = [m for m, n in counts.items() if n > 1]
    assert not dupes, f"posts applied twice: {dupes[:5]}"
    missing = [m for m in acked if m not in counts]
    assert not missing, f"{len(missing)} acknowledged posts lost, e.g. {missing[:5]}"


def broker_log(cluster: Cluster) -> str:
    return (cluster.data_dir("broker") / "twistd.log").read_text()


def test_sigstop_for_ten_seconds_under_sixteen_clients_fails_nothing(make_cluster) -> None:
    cluster = make_cluster()
    setup_board(cluster)
    with PlainWriters(cluster, 16) as w:
        w.wait_more(200, "before the pause")
        cluster.signal("servidor-3", signal.SIGSTOP)
        n = w.count()
        time.sleep(5)  # the pause itself is the fault under test
        view = cluster.broker_view()
        time.sleep(5)
        during = w.count() - n
        cluster.signal("servidor-3", signal.SIGCONT)
        wait_for(lambda: (cluster.broker_view() or {}).get("late_dropped", 0) > 0, 30,
                 "servidor-3's late answers to requests served elsewhere")
        w.wait_more(200, "after the pause")
    assert not w.failed, f"{len(w.failed)} requests failed, e.g. {w.failed[:3]}"
    assert w.slowest < 2.0
    # The broker stopped routing to the stopped server and served its requests elsewhere.
    stopped = {x["name"]: x for x in view["workers"]}["servidor-3"]
    assert not stopped["routing"] and not stopped["live"]
    assert view["resent"] >= 1
    assert during >= 500, f"only {during} writes answered in the 10 s pause"
    log = broker_log(cluster)
    assert "stopped routing to servidor-3: silent" in log
    assert log.rindex("routing to servidor-3") > log.index("stopped routing to servidor-3")
    files = wait_converged(cluster, cluster.names())
    assert_each_applied_once(files, w.acked, w.failed)


def in_flight(cluster: Cluster, name: str) -> int:
    return {x["name"]: x["in_flight"] for x in cluster.broker_view()["workers"]}[name]


def stranded_on_servidor_2(cluster: Cluster) -> None:
    """SIGSTOP servidor-2 while the broker counts requests in flight there, and leave it
    stopped once that count holds still (answers already on their way have landed) above
    zero; a stop that caught it idle is undone and tried again."""
    for _ in range(50):
        wait_for(lambda: in_flight(cluster, "servidor-2") > 0, 10,
                 "servidor-2 to hold a request", interval=0.001)
        cluster.signal("servidor-2", signal.SIGSTOP)
        seen = [in_flight(cluster, "servidor-2")]

        def settled(seen: list[int] = seen) -> bool:
            seen.append(in_flight(cluster, "servidor-2"))
            return seen[-1] == seen[-2]

        wait_for(settled, 5, "the broker's count for the stopped servidor-2", interval=0.02)
        if seen[-1] > 0:
            return
        cluster.signal("servidor-2", signal.SIGCONT)
    raise AssertionError("servidor-2 never held a request when stopped")


def test_server_killed_mid_request_its_requests_answered_by_another(make_cluster) -> None:
    cluster = make_cluster()
    setup_board(cluster)
    with PlainWriters(cluster, 8) as w:
        w.wait_more(200, "before the kill")
        # Kill at a moment servidor-2 holds requests, as the broker sees it: stopped first,
        # so that none it holds can still be answered between the look and the kill.
        stranded_on_servidor_2(cluster)
        cluster.kill("servidor-2")
        # What it held goes elsewhere once the broker hears it is gone (its heartbeats
        # stop): 200 more writes can be answered before that.
        wait_for(lambda: cluster.broker_view()["resent"] >= 1, 10,
                 "the broker to re-send what servidor-2 held")
        w.wait_more(200, "after the kill")
        view = cluster.broker_view()
    assert not w.failed, f"{len(w.failed)} requests failed, e.g. {w.failed[:3]}"
    assert view["resent"] >= 1, "no request was re-sent: none was stranded on servidor-2"
    assert "stopped routing to servidor-2" in broker_log(cluster)
    survivors = ["servidor-1", "servidor-3"]
    files = wait_converged(cluster, survivors)
    assert_each_applied_once(files, w.acked, w.failed)
    # ...and servidor-2, restarted, catches up to the same files.
    cluster.spawn("servidor-2")
    cluster.wait_up(["servidor-2"])
    assert wait_converged(cluster, cluster.names()) == read_files(cluster, "servidor-1")


def test_status_shows_the_brokers_view_of_each_server(cluster: Cluster) -> None:
    wait_for(lambda: all(x["routing"] for x in cluster.broker_view()["workers"]), 10,
             "the broker to route to every server")
    s = cluster.status("servidor-1")
    assert s["broker"]["routing"] is True and s["broker"]["in_flight"] >= 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.status(cluster.reference, 1.0, cluster.broker_status,
                          cluster.keys.directory) == 0
    rows = {line.lstrip("* ").split()[0]: line for line in out.getvalue().splitlines()
            if line.lstrip("* ").startswith("servidor")}
    assert set(rows) == set(cluster.names())
    assert all(" routing " in row for row in rows.values()), out.getvalue()
