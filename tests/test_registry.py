"""bbd.registry: unique stable ranks, persisted entries, heartbeat liveness with `now`."""

from __future__ import annotations

import pytest

from bbd.registry import Registry

EXPIRY = 10.0
EP = {"sync": "tcp://h:5561", "replication": "tcp://h:5562"}


def test_ranks_start_at_one_and_are_unique() -> None:
    reg = Registry(EXPIRY)
    got = [reg.rank(n, {}, now=0.0) for n in ("a", "b", "c")]
    assert got == [(1, True), (2, True), (3, True)]


def test_same_name_gets_the_same_rank() -> None:
    reg = Registry(EXPIRY)
    reg.rank("a", EP, 0.0)
    reg.rank("b", EP, 0.0)
    assert reg.rank("a", EP, 5.0) == (1, False)  # nothing to persist
    assert reg.rank("b", {}, 6.0) == (2, False)  # no endpoints: keep the known ones
    assert reg.servers["b"].endpoints == EP


def test_ranks_survive_a_rebuild_from_entries() -> None:
    reg = Registry(EXPIRY)
    for n in ("s1", "s2", "s3"):
        reg.rank(n, {"sync": f"tcp://{n}:1"}, 0.0)
    reborn = Registry(EXPIRY, reg.entries())
    assert reborn.rank("s2", {}, 1.0) == (2, False)
    assert reborn.rank("s3", {"sync": "tcp://s3:1"}, 1.0) == (3, False)
    assert reborn.rank("s4", {}, 1.0) == (4, True)  # never reuses a rank
    assert reborn.rank("s1", {}, 1.0) == (1, False)
    assert reborn.entries()[:3] == reg.entries()


def test_rebuilt_registry_lists_nobody_until_heard_from() -> None:
    reg = Registry(EXPIRY)
    reg.rank("s1", EP, 0.0)
    reborn = Registry(EXPIRY, reg.entries())
    assert reborn.live(0.0) == [] and reborn.expire(100.0) == []
    assert reborn.heartbeat("s1", 1.0) is True
    assert reborn.live(1.0) == [{"name": "s1", "rank": 1, **EP}]


def test_entries_persist_name_rank_endpoints_in_rank_order() -> None:
    reg = Registry(EXPIRY)
    reg.rank("zeta", {}, 0.0)
    reg.rank("alpha", EP, 0.0)
    assert reg.entries() == [{"name": "zeta", "rank": 1, "endpoints": {}},
                             {"name": "alpha", "rank": 2, "endpoints": EP}]


def test_endpoint_change_is_stored_and_reported() -> None:
    reg = Registry(EXPIRY)
    reg.rank("a", EP, 0.0)
    moved = {"sync": "tcp://new:6000", "replication": "tcp://new:6001"}
    assert reg.rank("a", moved, 1.0) == (1, True)
    assert reg.live(1.0) == [{"name": "a", "rank": 1, **moved}]
    assert reg.entries()[0]["endpoints"] == moved


def test_heartbeat_of_unknown_name_is_false() -> None:
    reg = Registry(EXPIRY)
    assert reg.heartbeat("ghost", 0.0) is False
    assert "ghost" not in reg.servers and reg.live(0.0) == []


@pytest.mark.parametrize("age,live", [(0.0, True), (EXPIRY, True), (EXPIRY + 0.001, False)])
def test_live_excludes_expired(age: float, live: bool) -> None:
    reg = Registry(EXPIRY)
    reg.rank("a", {}, 100.0)
    assert [s["name"] for s in reg.live(100.0 + age)] == (["a"] if live else [])


def test_heartbeat_keeps_a_server_live() -> None:
    reg = Registry(EXPIRY)
    reg.rank("a", {}, 0.0)
    reg.rank("b", {}, 0.0)
    for t in (8.0, 16.0, 24.0):
        assert reg.heartbeat("b", t) is True
    assert [s["name"] for s in reg.live(24.0)] == ["b"]
    assert [s["rank"] for s in reg.live(5.0)] == [1, 2]  # sorted by rank


def test_expire_reports_each_server_once() -> None:
    reg = Registry(EXPIRY)
    reg.rank("a", {}, 0.0)
    reg.rank("b", {}, 5.0)
    assert reg.expire(10.0) == []
    assert [s.name for s in reg.expire(12.0)] == ["a"]
    assert reg.expire(13.0) == []
    assert [s.name for s in reg.expire(30.0)] == ["b"]
    assert reg.expire(100.0) == [] and reg.live(100.0) == []
    reg.heartbeat("a", 101.0)  # back again: live, and expires (once) again later
    assert [s["name"] for s in reg.live(101.0)] == ["a"]
    assert [s.name for s in reg.expire(200.0)] == ["a"]
    assert reg.rank("a", {}, 300.0) == (1, False)


def test_a_name_belongs_to_the_token_that_first_claimed_it() -> None:
    from bbd.registry import Refused

    reg = Registry(EXPIRY)
    assert reg.rank("s2", EP, 0.0, token="secret-2") == (1, True)
    evil = {"sync": "tcp://evil:1", "replication": "tcp://evil:2"}
    for token in (None, "guess"):
        with pytest.raises(Refused):
            reg.rank("s2", evil, 1.0, token=token)
    assert reg.servers["s2"].endpoints == EP
    assert reg.rank("s2", EP, 2.0) == (1, False)  # same endpoints: harmless, rank returned
    moved = {"sync": "tcp://h2:1", "replication": "tcp://h2:2"}
    assert reg.rank("s2", moved, 3.0, token="secret-2") == (1, True)  # the owner moves
    with pytest.raises(Refused):
        reg.heartbeat("s2", 4.0, token="guess")  # nobody keeps it listed in its place
    assert reg.heartbeat("s2", 4.0, token="secret-2")
    reborn = Registry(EXPIRY, reg.entries())  # the claim survives the reference's restart
    assert "secret-2" not in str(reg.entries())  # only a hash is persisted
    with pytest.raises(Refused):
        reborn.rank("s2", evil, 5.0, token="guess")


def test_an_unclaimed_name_is_claimed_by_the_first_token() -> None:
    from bbd.registry import Refused

    reg = Registry(EXPIRY, [{"name": "old", "rank": 1, "endpoints": EP}])  # before tokens
    assert reg.rank("old", {}, 0.0) == (1, False)
    assert reg.heartbeat("old", 0.0)  # unclaimed: standard servers without tokens work
    assert reg.rank("old", EP, 1.0, token="t") == (1, True)
    with pytest.raises(Refused):
        reg.rank("old", {"sync": "tcp://x:1"}, 2.0)
    assert reg.registered() == [{"name": "old", "rank": 1, **EP}]


def test_a_server_that_leaves_is_off_the_list_at_once_and_keeps_its_rank() -> None:
    from bbd.registry import Refused

    reg = Registry(EXPIRY)
    reg.rank("s1", EP, 0.0, token="t1")
    reg.rank("s2", EP, 0.0, token="t2")
    with pytest.raises(Refused):
        reg.leave("s1", token="t2")  # nobody takes another server off the list
    assert [e["name"] for e in reg.live(1.0)] == ["s1", "s2"]
    assert reg.leave("s1", token="t1")
    assert [e["name"] for e in reg.live(1.0)] == ["s2"]  # not after the expiry: now
    assert not reg.leave("s1", token="t1")  # already off
    assert reg.expire(100.0) == [reg.servers["s2"]]  # s1 is not reported gone twice
    assert reg.rank("s1", EP, 101.0, token="t1") == (1, False)  # back with its rank
    assert not reg.leave("nobody")


def test_a_token_the_keys_vouch_for_takes_the_claim_over() -> None:
    # A server that lost its data directory (or whose claim predates the keys) proves its
    # name with a token derived from the board's keys; a guess still cannot.
    from bbd.registry import Refused

    vouched = {("s1", "derived-s1")}
    reg = Registry(EXPIRY, vouch=lambda name, token: (name, token) in vouched)
    reg.rank("s1", EP, 0.0, token="random-old")
    moved = {"sync": "tcp://h2:1", "replication": "tcp://h2:2"}
    for token in (None, "guess", "derived-s2"):
        with pytest.raises(Refused):
            reg.rank("s1", moved, 1.0, token=token)
        with pytest.raises(Refused):
            reg.heartbeat("s1", 1.0, token=token)
    assert reg.rank("s1", moved, 2.0, token="derived-s1") == (1, True)  # persisted anew
    assert reg.heartbeat("s1", 3.0, token="derived-s1")
    with pytest.raises(Refused):
        reg.heartbeat("s1", 4.0, token="random-old")  # the old claim is gone with it
