"""The coordinator's wiring on an in-memory network driven by ``task.Clock``: real
CoordinationService and Responder objects, fake sockets (requests and publications are delayed
calls), so every timeout and round is deterministic."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger

from bbd import config, protocol
from bbd.lamport import LamportClock
from bbd.physclock import PhysicalClock
from bbd.services.coordination import TOPIC, CoordinationService
from bbd.services.responder import Responder, call

LATENCY = 0.001
EPOCH = 1_700_000_000.0


class Net:
    def __init__(self, watchable: bool = False) -> None:
        self.watchable = watchable  # clients with socket monitors (``watch``)
        self.clock = Clock()
        self.clock.advance(EPOCH)
        self.servers: dict[str, FakeServer] = {}
        self.published: list[tuple[float, str, dict[str, Any]]] = []
        self.watched: list[WatchedClient] = []

    def drop(self, name: str, at: str | None = None) -> None:
        """Every connection to ``name`` (only ``at``'s, if given) drops: its watchers hear."""
        for client in self.watched:
            if client.to == name and at in (None, client.owner) and client.on_lost is not None:
                client.on_lost()

    def boot(self, name: str, rank: int, skew: float = 0.0) -> FakeServer:
        server = FakeServer(self, name, rank, skew)
        self.servers[name] = server
        server.coordination.startService()
        self.refresh()
        return server

    def crash(self, name: str) -> None:
        server = self.servers[name]
        server.up = False
        server.coordination.stopService()

    def refresh(self) -> None:
        """The reference's list reaching every live server: all servers not crashed."""
        listed = {n: s for n, s in self.servers.items() if s.up}
        for server in listed.values():
            kind = WatchedClient if self.watchable else FakeClient
            server.peers = {n: SimpleNamespace(name=n, rank=s.rank, sync_client=kind(self, n))
                            for n, s in listed.items() if n != server.cfg.name}
            for peer in server.peers.values():
                peer.sync_client.owner = server.cfg.name
            server.coordination.peers_changed()

    def publish(self, topic: str, payload: bytes) -> bool:
        self.published.append((self.clock.seconds(), topic, protocol.unpack(payload)))
        for server in list(self.servers.values()):
            self.clock.callLater(LATENCY, server.deliver, topic, payload)
        return True

    def run(self, seconds: float, step: float = 0.01) -> None:
        for _ in range(round(seconds / step)):
            self.clock.advance(step)

    def live(self) -> dict[str, FakeServer]:
        return {n: s for n, s in self.servers.items() if s.up}

    def views(self) -> dict[str, str | None]:
        return {n: s.coordination.status()["coordinator"] for n, s in self.live().items()}

    def announcements(self, since: float) -> list[str]:
        return [m["data"]["coordinator"] for t, _, m in self.published if t >= since]


class FakeClient:
    """A DealerClient stand-in: fails at once for a crashed peer (ZeroMQ IMMEDIATE)."""

    def __init__(self, net: Net, to: str) -> None:
        self.net = net
        self.to = to

    def request(self, body: bytes, timeout: float, connect_wait: float = 0.0) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        target = self.net.servers[self.to]
        if not target.up:
            d.errback(ConnectionError(f"{self.to}: not connected"))
            return d
        clock = self.net.clock

        def expire() -> None:
            if not d.called:
                d.errback(TimeoutError(f"{self.to}: no answer in time"))

        timer = clock.callLater(timeout, expire)

        def finish(out: bytes) -> None:
            if not d.called:
                timer.cancel()
                d.callback(out)

        def deliver() -> None:
            if target.up and target is self.net.servers[self.to]:
                target.serve(body, lambda out: clock.callLater(LATENCY, finish, out))

        clock.callLater(LATENCY, deliver)
        return d


class WatchedClient(FakeClient):
    """With a socket monitor: ``Net.drop`` calls its watcher at once, as ZeroMQ reports a
    connection that closed or stopped answering heartbeats."""

    def __init__(self, net: Net, to: str) -> None:
        super().__init__(net, to)
        self.on_lost: Any = None
        net.watched.append(self)

    def watch(self, on_lost: Any) -> None:
        self.on_lost = on_lost


# The timings these scenarios are written for (etc/bbd.toml's today, fixed here).
TIMING = config.settings().timing.replace(
    election_answer_timeout=0.5, election_announce_timeout=1.5, peer_timeout=1.0,
    berkeley_every_messages=10, announce_interval=1.0, coordinator_timeout=3.0,
    coordinator_check_interval=0.5, berkeley_min_gap=0.5, berkeley_max_rtt=0.2,
    berkeley_outlier_threshold=1.0)


class FakeServer:
    def __init__(self, net: Net, name: str, rank: int, skew: float) -> None:
        self.cfg = SimpleNamespace(name=name, subscribe="")
        self.clock = net.clock
        self.rank: int | None = rank
        self.peers: dict[str, Any] = {}
        self.lamport = LamportClock()
        self.physical = PhysicalClock(source=net.clock.seconds, skew=skew)
        self.responder = Responder(self.lamport, self.physical.now, Logger())
        self.publisher = net
        self.factory = None
        self.up = True
        self.coordination = CoordinationService(self, TIMING)

    def serve(self, body: bytes, send: Any) -> None:
        handlers = {"clock": lambda req: {"time": self.physical.now()},
                    "status": lambda req: self.coordination.status()}
        handlers.update(self.coordination.handlers())
        self.responder.handle(send, body, handlers)

    def deliver(self, topic: str, payload: bytes) -> None:
        if self.up:
            self.coordination.on_publication(topic, payload)


def timers(net: Net) -> None:
    """What makeService's TimerServices do, on the fake clock."""

    def check() -> None:
        for s in net.live().values():
            s.coordination.check_coordinator()
        net.clock.callLater(0.5, check)

    net.clock.callLater(0.5, check)


def cluster(skews: tuple[float, ...] = (0.0, 0.0, 0.0), watchable: bool = False) -> Net:
    net = Net(watchable)
    timers(net)
    for i, skew in enumerate(skews, start=1):
        net.boot(f"s{i}", i, skew)
    net.run(2)
    return net


def test_boot_elects_the_highest_rank_everywhere() -> None:
    net = cluster()
    assert net.views() == {"s1": "s3", "s2": "s3", "s3": "s3"}
    assert all(s.coordination.status()["election_phase"] == "idle"
               for s in net.live().values())
    # The coordinator keeps re-announcing itself; the payload has the standard's form.
    since = net.clock.seconds()
    net.run(2.5)
    assert set(net.announcements(since)) == {"s3"}
    _, topic, msg = net.published[-1]
    assert topic == TOPIC and msg["service"] == "election"
    assert {"coordinator", "timestamp", "clock"} <= msg["data"].keys()


def test_coordinator_crash_fails_over_within_a_second() -> None:
    net = cluster()
    killed = net.clock.seconds()
    net.crash("s3")
    net.run(1.0)
    assert net.views() == {"s1": "s2", "s2": "s2"}
    first = next(t for t, _, m in net.published
                 if t >= killed and m["data"]["coordinator"] == "s2")
    assert first - killed <= 0.6  # one probe interval plus a failed election request


def test_a_dropped_link_to_the_coordinator_elects_at_once() -> None:
    net = cluster(watchable=True)
    killed = net.clock.seconds()
    net.crash("s3")
    net.drop("s3")  # the monitor's disconnect: before any probe or timeout
    net.run(0.01, step=0.001)
    assert net.views() == {"s1": "s2", "s2": "s2"}
    first = next(t for t, _, m in net.published
                 if t >= killed and m["data"]["coordinator"] == "s2")
    assert first - killed <= 0.01
    # A dropped link to a server that is not the coordinator changes nothing.
    net.drop("s1")
    net.run(0.01, step=0.001)
    assert net.views() == {"s1": "s2", "s2": "s2"}


def test_an_election_stops_waiting_for_a_peer_whose_link_dropped() -> None:
    net = cluster(watchable=True)
    s3 = net.servers["s3"]  # hung: connected, silent (its requests time out)
    s3.serve = lambda body, send: None  # type: ignore[method-assign]
    s3.deliver = lambda topic, payload: None  # type: ignore[method-assign]
    s3.coordination.stopService()
    net.drop("s3", at="s1")  # s1 notices first and asks s2, which elects in turn
    net.run(0.01, step=0.001)  # s2 now waits for s3's answer to its election
    net.drop("s3", at="s2")  # ... whose link has dropped meanwhile: s2 wins at once
    net.run(0.02, step=0.001)
    assert {n: v for n, v in net.views().items() if n != "s3"} == {"s1": "s2", "s2": "s2"}


def test_a_returning_server_takes_over_only_once_caught_up() -> None:
    net = cluster()
    net.crash("s3")
    net.run(1.0)
    s3 = FakeServer(net, "s3", 3, 0.0)
    s3.ready = False  # registered, still catching up
    net.servers["s3"] = s3
    s3.coordination.startService()
    net.refresh()
    net.run(2.0)
    assert net.views() == {"s1": "s2", "s2": "s2", "s3": None}
    s3.ready = True
    s3.coordination.started()  # what the server calls once it serves clients
    net.run(1.0)
    assert net.views() == {"s1": "s3", "s2": "s3", "s3": "s3"}


def test_leaving_the_reference_list_starts_an_election() -> None:
    net = cluster()
    net.crash("s3")
    net.refresh()  # noticed through the list before any probe (every 0.5 s)
    net.run(0.05)  # a few hops: election, announcement, its confirmation
    assert net.views() == {"s1": "s2", "s2": "s2"}


def test_returning_higher_server_takes_over() -> None:
    net = cluster()
    net.crash("s3")
    net.run(1.0)
    net.boot("s3", 3)
    net.run(1.0)
    assert net.views() == {"s1": "s3", "s2": "s3", "s3": "s3"}
    since = net.clock.seconds()
    net.run(2.5)
    assert set(net.announcements(since)) == {"s3"}  # s2 stopped claiming the role


def test_hung_coordinator_times_out_and_is_replaced() -> None:
    net = cluster()
    # Still connected but silent (SIGSTOP): requests time out instead of failing at once.
    s3 = net.servers["s3"]
    s3.serve = lambda body, send: None  # type: ignore[method-assign]
    s3.deliver = lambda topic, payload: None  # type: ignore[method-assign]
    s3.coordination.stopService()
    net.run(3.0)
    assert {n: v for n, v in net.views().items() if n != "s3"} == {"s1": "s2", "s2": "s2"}


def test_berkeley_converges_without_going_backwards() -> None:
    net = cluster(skews=(-3.0, 0.0, 5.0))
    last = {n: s.physical.now() for n, s in net.servers.items()}
    for _ in range(30):
        net.servers["s3"].coordination.berkeley_tick()
        for _ in range(100):
            net.clock.advance(0.01)
            for n, s in net.servers.items():
                now = s.physical.now()
                assert now >= last[n]
                last[n] = now
    offsets = [s.physical.now() - net.clock.seconds() for s in net.servers.values()]
    assert max(offsets) - min(offsets) < 0.001
    assert abs(offsets[1]) < 0.01  # the outliers moved to the sound clock, not it to them
    assert all(s.coordination.status()["last_sync"] is not None
               for s in net.servers.values())


def test_every_tenth_message_of_a_follower_asks_for_a_round() -> None:
    net = cluster()
    coordinator = net.servers["s3"].coordination
    net.run(1.0)  # past the minimum gap after the election's own round
    before = coordinator.rounds
    for n in range(1, 10):
        net.servers["s1"].coordination.message_handled(n)
    net.run(0.1)
    assert coordinator.rounds == before
    net.servers["s1"].coordination.message_handled(10)
    net.run(0.1)
    assert coordinator.rounds == before + 1
    # A burst of triggers within the gap is merged into one more round.
    for n in (20, 30, 40):
        net.servers["s2"].coordination.message_handled(n)
    net.run(1.0)
    assert coordinator.rounds == before + 2


def test_adjust_only_from_the_followed_coordinator_and_only_if_it_sent_it() -> None:
    net = cluster()
    s1 = net.servers["s1"]
    synced = s1.coordination.last_sync
    results: list[Any] = []
    # Not the coordinator; then the coordinator's name on an adjustment it never sent.
    for sender in ("s2", "s3"):
        d = call(FakeClient(net, "s1"), "adjust", {"name": sender, "delta": 0.25, "round": 1},
                 lamport=LamportClock(), now=lambda: 0.0, timeout=1.0)
        d.addCallback(results.append)
        net.run(0.1)
    assert [r["status"] for r in results] == ["erro", "erro"]
    assert s1.physical.pending() == 0 and s1.coordination.last_sync == synced
    net.servers["s3"].coordination.request_round("test")  # the genuine one, confirmed
    net.run(0.5)
    assert s1.coordination.last_sync != synced


def test_announcement_of_an_unlisted_or_unconfirmed_coordinator_is_ignored() -> None:
    net = cluster()
    for name, rank in (("evil-coord", 99), ("s2", 2)):  # a stranger; a server that is not
        msg = protocol.message("election", {"coordinator": name, "rank": rank}, clock=1,
                               timestamp=0.0)
        net.publish(TOPIC, protocol.encode(msg))
        net.run(0.5)
        assert net.views() == {"s1": "s3", "s2": "s3", "s3": "s3"}


def test_election_request_from_a_higher_rank_is_declined() -> None:
    net = cluster()
    results: list[Any] = []
    d = call(FakeClient(net, "s2"), "election", {"name": "s3", "rank": 3},
             lamport=LamportClock(), now=lambda: 0.0, timeout=1.0)
    d.addCallback(results.append)
    net.run(0.1)
    assert results[0]["status"] == "erro" and "election" not in results[0]
    d = call(FakeClient(net, "s2"), "election", {}, lamport=LamportClock(),
             now=lambda: 0.0, timeout=1.0)  # a foreign server that sends no name
    d.addCallback(results.append)
    net.run(0.1)
    assert results[1]["election"] == "OK"


def test_an_adjustment_beyond_any_real_skew_is_refused() -> None:
    net = cluster()
    s1 = net.servers["s1"]
    results: list[Any] = []
    for delta in (1e300, -2 * 86400.0):
        d = call(FakeClient(net, "s1"), "adjust", {"name": "s3", "delta": delta},
                 lamport=LamportClock(), now=lambda: 0.0, timeout=1.0)
        d.addCallback(results.append)
        net.run(0.1)
    assert [r["status"] for r in results] == ["erro", "erro"]
    assert s1.physical.pending() == 0
