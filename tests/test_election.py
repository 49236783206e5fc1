from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from twisted.internet.task import Clock

from bbd.election import (
    Action,
    Announce,
    Bully,
    CoordinatorChanged,
    Phase,
    SendElection,
)

TIMEOUTS = dict(
    answer_timeout=1.0, announce_timeout=3.0, announce_interval=2.0, coordinator_timeout=7.0
)


class Net:
    """Bully machines wired together: messages travel with a latency and may be lost.

    ``election`` is a request/reply: when the request or its OK is lost, or the
    target is down, the sender's service sees its request time out and reports
    ``election_request_failed`` (unless ``report_failures`` is off, leaving the
    machine to its own timeouts). A crashed node's state is gone; a returning node
    is a fresh machine, and messages meant for its old incarnation are dropped.
    """

    def __init__(
        self,
        ranks: dict[str, int],
        *,
        seed: int = 0,
        loss: float = 0.0,
        latency: float = 0.01,
        req_timeout: float = 0.5,
        report_failures: bool = True,
    ) -> None:
        self.clock = Clock()
        self.ranks = ranks
        self.rng = random.Random(seed)
        self.loss = loss
        self.latency = latency
        self.req_timeout = req_timeout
        self.report_failures = report_failures
        self.drop: Callable[[str, str, str], bool] = lambda kind, src, dst: False
        self.nodes: dict[str, Bully | None] = {n: None for n in ranks}
        self.log: list[tuple[float, str, Action]] = []

    # -- membership ---------------------------------------------------------

    def boot(self, *names: str) -> None:
        for name in names:
            node = Bully(name, self.ranks[name], self.clock, self.ranks, **TIMEOUTS)
            self.nodes[name] = node
            self.run(name, node, node.start())

    def crash(self, name: str) -> None:
        self.nodes[name] = None

    def live(self) -> dict[str, Bully]:
        return {n: m for n, m in self.nodes.items() if m is not None}

    def highest_live(self) -> str:
        return max(self.live(), key=lambda n: self.ranks[n])

    # -- message passing ----------------------------------------------------

    def _lost(self, kind: str, src: str, dst: str) -> bool:
        return self.drop(kind, src, dst) or self.rng.random() < self.loss

    def _alive(self, name: str, node: Bully) -> bool:
        return self.nodes.get(name) is node

    def run(self, name: str, node: Bully, actions: list[Action]) -> None:
        for action in actions:
            self.log.append((self.clock.seconds(), name, action))
            if isinstance(action, SendElection):
                self.clock.callLater(self.latency, self._arrive, name, node, action.to)
            elif isinstance(action, Announce):
                for dst in self.ranks:
                    if not self._lost("announce", name, dst):
                        self.clock.callLater(self.latency, self._announce, name, dst)

    def _request_failed(self, src: str, node: Bully, dst: str) -> None:
        def report() -> None:
            if self._alive(src, node):
                self.run(src, node, node.election_request_failed(dst))

        if self.report_failures:
            self.clock.callLater(self.req_timeout, report)

    def _arrive(self, src: str, node: Bully, dst: str) -> None:
        if not self._alive(src, node):
            return
        target = self.nodes[dst]
        if target is None or self._lost("election", src, dst):
            self._request_failed(src, node, dst)
            return
        ok, actions = target.election_request_received(src, self.ranks[src])
        self.run(dst, target, actions)
        if not ok:
            return
        if self._lost("ok", dst, src):
            self._request_failed(src, node, dst)
            return

        def reply() -> None:
            if self._alive(src, node):
                self.run(src, node, node.ok_received(dst))

        self.clock.callLater(self.latency, reply)

    def _announce(self, src: str, dst: str) -> None:
        target = self.nodes[dst]
        if target is not None:
            self.run(dst, target, target.announcement_received(src, self.ranks[src]))

    # -- time ---------------------------------------------------------------

    def advance(self, seconds: float, step: float = 0.1) -> None:
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            for name, node in list(self.live().items()):
                if self._alive(name, node):
                    self.run(name, node, node.tick())

    # -- observations -------------------------------------------------------

    def views(self) -> dict[str, str | None]:
        return {n: m.coordinator for n, m in self.live().items()}

    def converged(self) -> bool:
        top = self.highest_live()
        live = self.live()
        return all(m.coordinator == top for m in live.values()) and [
            n for n, m in live.items() if m.is_coordinator
        ] == [top]

    def announcers(self, since: float = 0.0) -> set[str]:
        return {n for t, n, a in self.log if t >= since and isinstance(a, Announce)}


RANKS = {"a": 1, "b": 2, "c": 3, "d": 4}


def settled(ranks: dict[str, int] = RANKS, **kw: object) -> Net:
    net = Net(ranks, **kw)  # type: ignore[arg-type]
    net.boot(*ranks)
    net.advance(5)
    assert net.converged()
    return net


# -- the machine on its own ---------------------------------------------------


def machine(name: str = "b", **kw: object) -> tuple[Clock, Bully]:
    clock = Clock()
    return clock, Bully(name, RANKS[name], clock, RANKS, **TIMEOUTS, **kw)  # type: ignore[arg-type]


def test_start_asks_every_higher_rank() -> None:
    _, node = machine("b")
    assert node.start() == [SendElection("c"), SendElection("d")]
    assert node.phase is Phase.ELECTING
    assert node.coordinator is None


def test_lone_node_becomes_coordinator() -> None:
    clock = Clock()
    node = Bully("solo", 1, clock, {}, **TIMEOUTS)
    assert node.start() == [Announce("solo"), CoordinatorChanged("solo")]
    assert node.is_coordinator


def test_no_answer_within_timeout_wins() -> None:
    clock, node = machine("b")
    node.start()
    clock.advance(0.9)
    assert node.tick() == []
    clock.advance(0.1)
    assert node.tick() == [Announce("b"), CoordinatorChanged("b")]


def test_all_requests_failing_wins_at_once() -> None:
    _, node = machine("b")
    node.start()
    assert node.election_request_failed("c") == []
    assert node.election_request_failed("d") == [Announce("b"), CoordinatorChanged("b")]


def test_ok_then_silence_restarts_the_election() -> None:
    clock, node = machine("b")
    node.start()
    node.ok_received("d")
    assert node.phase is Phase.WAITING
    clock.advance(2.9)
    assert node.tick() == []
    clock.advance(0.1)
    assert node.tick() == [SendElection("c"), SendElection("d")]


def test_request_from_lower_is_answered_and_starts_own_election() -> None:
    _, node = machine("b")
    ok, actions = node.election_request_received("a", 1)
    assert ok
    assert actions == [SendElection("c"), SendElection("d")]
    # A second request while electing is answered without a second election.
    assert node.election_request_received("a", 1) == (True, [])


def test_request_from_higher_is_refused() -> None:
    _, node = machine("b")
    assert node.election_request_received("c", 3) == (False, [])
    assert node.phase is Phase.IDLE


def test_coordinator_answers_and_reannounces() -> None:
    _, node = machine("d")
    node.start()
    assert node.election_request_received("a") == (True, [Announce("d")])


def test_announcement_from_lower_is_bullied() -> None:
    _, node = machine("c")
    node.start()
    node.announcement_received("d", 4)
    assert node.coordinator == "d"
    assert node.announcement_received("a", 1) == [SendElection("d")]
    assert node.coordinator == "d"  # not accepted


def test_announcement_from_higher_is_accepted_mid_election() -> None:
    _, node = machine("b")
    node.start()
    assert node.announcement_received("c", 3) == [CoordinatorChanged("c")]
    assert node.phase is Phase.IDLE
    assert node.tick() == []


def test_stale_failure_report_ignored() -> None:
    _, node = machine("b")
    node.start()
    node.announcement_received("d", 4)
    assert node.coordinator_failed("c") == []
    assert node.coordinator == "d"
    assert node.coordinator_failed("d") == [
        CoordinatorChanged(None),
        SendElection("c"),
        SendElection("d"),
    ]


def test_reference_dropping_the_coordinator_starts_an_election() -> None:
    _, node = machine("b")
    node.start()
    node.announcement_received("d", 4)
    actions = node.peers_changed({"a": 1, "b": 2, "c": 3})
    assert actions == [CoordinatorChanged(None), SendElection("c")]


def test_peers_leaving_mid_election_decide_it() -> None:
    _, node = machine("b")
    node.start()
    assert node.peers_changed({"a": 1, "b": 2, "d": 4}) == []  # still waiting on d
    assert node.peers_changed({"a": 1, "b": 2}) == [Announce("b"), CoordinatorChanged("b")]


def test_higher_peer_joining_mid_election_is_asked_too() -> None:
    clock = Clock()
    node = Bully("b", 2, clock, {"a": 1, "c": 3}, **TIMEOUTS)
    node.start()
    assert node.peers_changed({"a": 1, "c": 3, "e": 5}) == [SendElection("e")]
    assert node.election_request_failed("c") == []  # e has not answered yet


def test_coordinator_challenges_a_newly_listed_higher_rank() -> None:
    clock = Clock()
    node = Bully("b", 2, clock, {"a": 1}, **TIMEOUTS)
    node.start()
    assert node.is_coordinator
    assert node.peers_changed({"a": 1, "c": 3}) == [SendElection("c")]


def test_lease_expiry_starts_an_election() -> None:
    clock, node = machine("b")
    node.start()
    node.announcement_received("d", 4)
    clock.advance(6.9)
    assert node.tick() == []
    clock.advance(0.1)
    assert node.tick() == [CoordinatorChanged(None), SendElection("c"), SendElection("d")]


def test_coordinator_reannounces_periodically() -> None:
    clock, node = machine("d")
    node.start()
    assert node.next_deadline() == 2.0
    clock.advance(2.0)
    assert node.tick() == [Announce("d", repeat=True)]
    assert node.tick() == []


def test_lease_must_outlast_reannounce_interval() -> None:
    with pytest.raises(ValueError):
        Bully("a", 1, Clock(), announce_interval=3.0, coordinator_timeout=3.0)


# -- several machines over a simulated network --------------------------------


def test_all_boot_together_highest_wins() -> None:
    net = Net(RANKS)
    net.boot(*RANKS)
    net.advance(5)
    assert net.views() == {n: "d" for n in RANKS}
    assert net.announcers() == {"d"}  # nobody else ever claimed the role


def test_lone_survivor_wins_on_its_own_timeout() -> None:
    net = Net(RANKS, report_failures=False)
    net.boot("a")
    net.advance(0.9)
    assert net.views() == {"a": None}
    net.advance(0.2)
    assert net.views() == {"a": "a"}


def test_two_simultaneous_elections() -> None:
    net = settled()
    net.crash("d")
    t = net.clock.seconds()
    net.run("a", net.nodes["a"], net.nodes["a"].coordinator_failed("d"))  # type: ignore[union-attr]
    net.run("b", net.nodes["b"], net.nodes["b"].coordinator_failed("d"))  # type: ignore[union-attr]
    net.advance(5)
    assert net.views() == {"a": "c", "b": "c", "c": "c"}
    assert net.announcers(since=t) == {"c"}  # a and b yielded to c, no split ever
    assert sum(1 for tt, n, a in net.log if tt >= t and a == Announce("c")) == 1


def test_coordinator_crash_noticed_by_lease_next_highest_wins() -> None:
    net = settled()
    net.crash("d")
    net.advance(12)  # nobody reports the crash: the 7 s lease runs out
    assert net.views() == {"a": "c", "b": "c", "c": "c"}
    assert net.converged()


def test_coordinator_returning_takes_over() -> None:
    net = settled()
    net.crash("d")
    net.advance(12)
    assert net.views()["a"] == "c"
    net.boot("d")
    net.advance(3)
    assert net.views() == {n: "d" for n in RANKS}
    assert not net.nodes["c"].is_coordinator  # type: ignore[union-attr]


def test_lost_oks_make_a_false_winner_that_is_bullied_back() -> None:
    net = settled()
    t = net.clock.seconds()
    # a wrongly suspects d; its OKs are lost (its requests time out) and so, for a
    # second, is every announcement meant for it (d answers a request by re-announcing)
    net.drop = lambda kind, src, dst: dst == "a" and (kind == "ok" or net.clock.seconds() < t + 1)
    net.run("a", net.nodes["a"], net.nodes["a"].coordinator_failed())  # type: ignore[union-attr]
    net.advance(0.9)
    assert net.views()["a"] == "a"  # the loss fooled a into winning
    net.advance(3)
    assert net.views() == {n: "d" for n in RANKS}
    assert net.converged()
    assert net.announcers(since=t) == {"a", "d"}


def test_lost_announcement_repaired_by_reannouncement() -> None:
    net = settled()
    net.crash("d")
    net.drop = lambda kind, src, dst: kind == "announce" and dst == "a"
    net.run("b", net.nodes["b"], net.nodes["b"].coordinator_failed())  # type: ignore[union-attr]
    net.advance(3)
    assert net.views()["b"] == "c"
    assert net.views()["a"] == "d"  # a never heard: still follows the dead server
    net.drop = lambda kind, src, dst: False
    net.advance(2.1)  # one re-announce period
    assert net.views()["a"] == "c"


def test_lost_election_requests_still_converge() -> None:
    net = settled(report_failures=False)
    net.drop = lambda kind, src, dst: kind == "election" and dst == "d"
    # c wrongly suspects d and its requests vanish without a trace: c's own timeout
    net.run("c", net.nodes["c"], net.nodes["c"].coordinator_failed())  # type: ignore[union-attr]
    net.advance(1.1)
    assert net.views()["c"] == "c"
    net.advance(3)  # d hears c's claim and bullies back
    assert net.views() == {n: "d" for n in RANKS}
    assert net.converged()


@pytest.mark.parametrize("seed", range(25))
def test_random_crashes_and_returns_converge(seed: int) -> None:
    ranks = {f"s{i}": i for i in range(1, 7)}
    net = Net(ranks, seed=seed, loss=0.2)
    rng = random.Random(seed)
    net.boot(*rng.sample(sorted(ranks), 3))
    for _ in range(40):
        net.advance(rng.choice([0.1, 0.5, 1.0, 3.0]))
        name = rng.choice(sorted(ranks))
        node = net.nodes[name]
        if node is None:
            net.boot(name)
        elif rng.random() < 0.5:
            net.crash(name)
        elif node.coordinator and not node.is_coordinator and rng.random() < 0.5:
            net.run(name, node, node.coordinator_failed())  # a flaky failure detector
    if not net.live():
        net.boot(rng.choice(sorted(ranks)))
    net.loss = 0.0  # messages flow again
    net.advance(20)
    assert net.converged(), net.views()
    # and it stays put: nobody changes their mind any more
    before = len([a for _, _, a in net.log if isinstance(a, CoordinatorChanged)])
    net.advance(30)
    after = len([a for _, _, a in net.log if isinstance(a, CoordinatorChanged)])
    assert after == before
    assert net.announcers(since=net.clock.seconds() - 30) == {net.highest_live()}
