"""Partitions of a real cluster, one network namespace per daemon (bbd/netns.py): what the
README's replication section promises when servers cannot reach each other, and that the
cluster converges once the links return. Needs root, as in CI: elsewhere these tests fail
with the reason, they are never skipped."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_replication import Writers, assert_exactly_once, setup_board, wait_converged

from bbd import netns
from bbd.client import Client
from bbd.localcluster import wait_for
from bbd.netns import NetCluster


@pytest.fixture
def net_cluster(tmp_path: Path) -> Iterator:
    why = netns.unavailable()
    if why:
        pytest.fail(f"{why}. CI runs these tests as root; they are never skipped.",
                    pytrace=False)
    made: list[NetCluster] = []

    def make(**kw) -> NetCluster:
        c = NetCluster(tmp_path / f"n{len(made)}", **kw)
        made.append(c)
        return c.start()

    yield make
    for c in made:
        c.stop()


def counts_on(cluster: NetCluster, server: str, peer: str) -> bool:
    """Whether ``server`` still counts ``peer`` as a live replication peer."""
    status = cluster.status(server)
    return status is None or bool(status["peers"].get(peer))


def applied(cluster: NetCluster, server: str) -> int:
    return wait_for(lambda: cluster.status(server), 5, f"{server}'s status")["applied"]


def test_cut_off_server_majority_serves_then_all_converge(net_cluster) -> None:
    cluster = net_cluster()
    lone, rest = "servidor-1", ["servidor-2", "servidor-3"]
    setup_board(cluster)
    with Writers(cluster, 4) as w:
        w.wait_more(30, "before the cut")
        cluster.net.isolate(lone)  # from the reference, proxy, broker and both peers
        for name in rest:
            wait_for(lambda n=name: not counts_on(cluster, n, lone), 10,
                     f"{name} to stop waiting for {lone}")
        frozen, before = applied(cluster, lone), applied(cluster, rest[0])
        w.wait_more(30, f"while {lone} is cut off")
        # The majority went on serving writes through the broker (all but the few in
        # flight when counting began are new); nothing reached the cut-off server: no
        # request from the broker, no replication from its peers.
        assert applied(cluster, rest[0]) >= before + 30 - len(w.threads)
        assert applied(cluster, lone) == frozen
        cluster.net.heal()
        w.wait_more(30, "after the heal")
    assert w.failed == 0
    files = wait_converged(cluster, cluster.names())
    assert len({applied(cluster, n) for n in cluster.names()}) == 1
    assert_exactly_once(files, w.acked)
    log = (cluster.data_dir(lone) / "twistd.log").read_text()
    assert "caught up after a cut-off from the reference" in log


def listed(cluster: NetCluster) -> list[str] | None:
    """The servers the reference lists as live (None if it did not answer in time)."""
    reply = cluster.ask(cluster.reference, "list")
    return None if reply is None else sorted(e["name"] for e in reply["list"])


def channel_creations(cluster: NetCluster, server: str, channel: str) -> list[dict]:
    """Every creation of ``channel`` in ``server``'s journal, winners and losers."""
    from bbd.state import Op
    from bbd.store import Journal

    ops = []
    for record in Journal(cluster.data_dir(server)).load().records:  # maps and rows
        op = Op.from_journal(record).to_dict()
        if op["kind"] == "channel" and op["fields"]["channel"] == channel:
            ops.append(op)
    return sorted(ops, key=lambda op: (op["clock"], op["origin"], op["seq"]))


def test_split_both_sides_grant_a_name_then_one_winner_everywhere(net_cluster) -> None:
    # Side A holds the reference, the proxy, the main broker and two servers; side B a
    # broker of its own and servidor-3, so a client on each side reaches a server there.
    cluster = net_cluster(brokers=2, broker_of={"servidor-3": "broker-2"})
    side_a = ["reference", "proxy", "broker", "servidor-1", "servidor-2"]
    side_b = ["broker-2", "servidor-3"]
    a = Client(cluster.frontend_of("broker"), timeout=3)
    b = Client(cluster.frontend_of("broker-2"), timeout=3)
    assert a.request("login", {"user": "ana"})["status"] == "sucesso"
    assert b.request("login", {"user": "bia"})["status"] == "sucesso"

    cluster.net.partition(side_a, side_b)
    rids = {"a": "split-a-sala", "b": "split-b-sala"}
    replies: dict[str, dict] = {}

    def create(side: str, client: Client) -> None:
        replies[side] = client.request("channel", {"channel": "sala"}, rid=rids[side])

    threads = [threading.Thread(target=create, args=item) for item in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # Both sides stay available, and each grants the name: each is told sucesso.
    assert replies["a"]["status"] == "sucesso", replies["a"]
    assert replies["b"]["status"] == "sucesso", replies["b"]
    assert a.request("channels")["channels"] == ["sala"]
    assert b.request("channels")["channels"] == ["sala"]
    # Keep the split until the reference (side A) writes servidor-3 off, so the heal also
    # goes through its registering again.
    wait_for(lambda: listed(cluster) == ["servidor-1", "servidor-2"], 10,
             "the reference to write servidor-3 off")

    cluster.net.heal()
    files = wait_converged(cluster, cluster.names())
    # Both creations are in every log; the least in (clock, origin, seq) is the one
    # visible on every replica.
    creations = channel_creations(cluster, "servidor-1", "sala")
    assert {op["rid"] for op in creations} == set(rids.values())
    for name in cluster.names()[1:]:
        assert channel_creations(cluster, name, "sala") == creations, name
    winner = creations[0]
    visible = [c for c in json.loads(files["canais.json"]) if c["channel"] == "sala"]
    assert [c["id"] for c in visible] == [f"{winner['origin']}:{winner['seq']}"]
    for client in (a, b):
        assert client.request("channels")["channels"] == ["sala"]
    # Retried now, each creation is answered as the board decided: the loser's creator,
    # told sucesso during the split, now hears erro.
    for side, client in (("a", a), ("b", b)):
        reply = client.request("channel", {"channel": "sala"}, rid=rids[side])
        expected = "sucesso" if rids[side] == winner["rid"] else "erro"
        assert reply["status"] == expected, (side, reply)
    a.close()
    b.close()
