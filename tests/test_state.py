"""bbd.state: the board as a deterministic replicated state machine."""

from __future__ import annotations

import random
from typing import Any

import pytest

from bbd.state import Board, Op, entry, ops_from_files, parse_op_id

USERS = ("ana", "bia", "caio", "davi")
CHANNELS = ("geral", "news", "dev")
ORIGINS = ("s1", "s2", "s3")


def login(origin: str, seq: int, clock: int, user: str, ts: float = 0.0,
          rid: str | None = None) -> Op:
    return Op(origin, seq, clock, "login", ts or float(clock), {"user": user}, rid)


def channel(origin: str, seq: int, clock: int, name: str, rid: str | None = None) -> Op:
    return Op(origin, seq, clock, "channel", float(clock), {"channel": name}, rid)


def post(origin: str, seq: int, clock: int, user: str, chan: str, text: str,
         rid: str | None = None) -> Op:
    return Op(origin, seq, clock, "publish", float(clock),
              {"user": user, "channel": chan, "message": text}, rid)


def dm(origin: str, seq: int, clock: int, src: str, dst: str, text: str,
       rid: str | None = None) -> Op:
    return Op(origin, seq, clock, "message", float(clock),
              {"src": src, "dst": dst, "message": text}, rid)


def board_of(ops, name: str = "r") -> Board:
    b = Board(name)
    for op in ops:
        b.apply(op)
    return b


# -- a random but reproducible workload ------------------------------------------------

# A client request, retried on several servers with the same request id, is the same write.
RETRIED = {
    "rid-chan": ("channel", {"channel": "geral"}),
    "rid-login": ("login", {"user": "ana"}),
    "rid-post": ("publish", {"user": "ana", "channel": "geral", "message": "once"}),
    "rid-dm": ("message", {"src": "ana", "dst": "bia", "message": "once"}),
}


def workload(seed: int, per_origin: int = 14) -> list[Op]:
    """Three origins with increasing clocks that often tie across origins; concurrent
    creations of the same channel names and the same request ids on several origins."""
    rng = random.Random(seed)
    ops = []
    for origin in ORIGINS:
        clock = 0
        for seq in range(1, per_origin + 1):
            clock += rng.choice((1, 1, 2))
            r = rng.random()
            if r < 0.2:
                rid = rng.choice(sorted(RETRIED))
                kind, fields = RETRIED[rid]
                ops.append(Op(origin, seq, clock, kind, float(clock), dict(fields), rid))
            elif r < 0.45:
                ops.append(channel(origin, seq, clock, rng.choice(CHANNELS)))
            elif r < 0.65:
                ops.append(login(origin, seq, clock, rng.choice(USERS),
                                 ts=1000.0 + clock + seq / 100))
            elif r < 0.85:
                ops.append(post(origin, seq, clock, rng.choice(USERS), rng.choice(CHANNELS),
                                f"{origin}-{seq}"))
            else:
                ops.append(dm(origin, seq, clock, rng.choice(USERS), rng.choice(USERS),
                              f"{origin}-{seq}"))
    return ops


def oracle(ops: list[Op]) -> dict:
    """What the board must show, computed the slow obvious way from the op set."""
    ordered = sorted(ops, key=lambda o: o.order)
    winners: dict[str, str] = {}
    for op in ordered:
        for key in op.keys():
            winners.setdefault(key, op.id)
    visible = [op for op in ordered if all(winners[k] == op.id for k in op.keys())]
    users: list[str] = []
    for op in visible:
        if op.kind == "login" and op.fields["user"] not in users:
            users.append(op.fields["user"])
    return {
        "winners": winners,
        "users": users,
        "channels": [op.fields["channel"] for op in visible if op.kind == "channel"],
        "posts": [op.id for op in visible if op.kind == "publish"],
        "messages": [op.id for op in visible if op.kind == "message"],
        "logins": {u: [op.timestamp for op in visible
                       if op.kind == "login" and op.fields["user"] == u] for u in users},
    }


def observe(b: Board) -> dict:
    snap = b.snapshot()
    return {
        "snapshot": snap,
        "users": b.user_list(),
        "channels": b.channel_list(),
        "winners": {k: op.id for k, op in b.winners.items()},
        "history": {
            **{("channel", c): b.history("channel", c, 1000, None) for c in CHANNELS},
            **{("user", u): b.history("user", u, 1000, None) for u in USERS},
        },
        "outcomes": {op_id: b.outcome(op) for op_id, op in b.ops.items()},
        "vector": dict(b.vector),
    }


@pytest.mark.parametrize("seed", range(4))
def test_any_arrival_order_gives_the_same_board(seed: int) -> None:
    ops = workload(seed)
    rng = random.Random(1000 + seed)
    reference = observe(board_of(ops))
    for _ in range(50):  # 4 seeds x 50 = 200 permutations
        shuffled = ops[:]
        rng.shuffle(shuffled)
        assert observe(board_of(shuffled)) == reference


@pytest.mark.parametrize("seed", range(4))
def test_board_matches_the_total_order_oracle(seed: int) -> None:
    ops = workload(seed)
    shuffled = ops[:]
    random.Random(seed).shuffle(shuffled)
    b = board_of(shuffled)
    want = oracle(ops)
    assert {k: op.id for k, op in b.winners.items()} == want["winners"]
    assert b.user_list() == want["users"]
    assert b.channel_list() == want["channels"]
    snap = b.snapshot()
    assert [e["id"] for e in snap["publicacoes.json"]] == want["posts"]
    assert [e["id"] for e in snap["mensagens.json"]] == want["messages"]
    assert {e["user"]: e["logins"] for e in snap["usuarios.json"]} == want["logins"]
    assert [e["channel"] for e in snap["canais.json"]] == want["channels"]
    # The workload really exercises the contested cases: same-name creations, ties of
    # clock across origins, and request ids retried on several origins.
    names = [op.fields["channel"] for op in ops if op.kind == "channel"]
    assert len(names) > len(set(names))
    assert any(len({op.origin for op in ops if op.rid == rid}) > 1 for rid in RETRIED)
    assert len({op.clock for op in ops}) < len(ops)


@pytest.mark.parametrize("seed", range(4))
def test_one_creation_wins_per_channel_name(seed: int) -> None:
    ops = workload(seed)
    b = board_of(ops)
    assert len(b.channel_list()) == len(set(b.channel_list()))
    for name in {op.fields["channel"] for op in ops if op.kind == "channel"}:
        creators = [op for op in ops if op.kind == "channel" and op.fields["channel"] == name]
        least = min(creators, key=lambda o: o.order)
        assert b.winners["channel:" + name] is least
        for op in creators:
            if op is not least and (op.rid is None or b.by_rid(op.rid) is not least):
                assert b.outcome(op) == "channel already exists"


@pytest.mark.parametrize("seed", range(4))
def test_request_id_loser_answers_as_its_winner(seed: int) -> None:
    ops = workload(seed)
    b = board_of(reversed(ops))
    losers = 0
    for op in ops:
        if op.rid is None:
            continue
        winner = b.by_rid(op.rid)
        assert winner is min((o for o in ops if o.rid == op.rid), key=lambda o: o.order)
        assert b.outcome(op) == b.outcome(winner)
        if op is not winner:
            losers += 1
            assert not b.visible(op)
    assert losers > 0


def test_concurrent_channel_creation_least_order_wins() -> None:
    a = channel("s2", 1, 5, "geral")
    c = channel("s1", 4, 5, "geral")  # same clock: origin breaks the tie
    d = channel("s3", 1, 3, "geral")  # earliest clock
    for order in ([a, c, d], [d, c, a], [c, a, d]):
        b = board_of(order)
        assert b.channel_list() == ["geral"]
        assert b.snapshot()["canais.json"][0]["id"] == "s3:1"
        assert [b.outcome(x) for x in (a, c, d)] == ["channel already exists"] * 2 + [None]
    b = board_of([a, c])
    assert b.snapshot()["canais.json"][0]["id"] == "s1:4"
    assert b.competitors(a) == [c] and b.competitors(c) == []


def test_retried_post_is_shown_once_and_shares_the_answer() -> None:
    setup = [channel("s1", 1, 1, "geral"), login("s1", 2, 2, "ana")]
    first = post("s2", 1, 7, "ana", "geral", "hi", rid="r1")
    retry = post("s1", 3, 6, "ana", "geral", "hi", rid="r1")
    for order in ([first, retry], [retry, first]):
        b = board_of(setup + order)
        assert [e["id"] for e in b.history("channel", "geral", 10, None)] == ["s1:3"]
        assert b.by_rid("r1") is retry
        assert b.outcome(first) is None and not b.visible(first) and b.visible(retry)


def test_retried_channel_creation_succeeds_for_the_loser_too() -> None:
    late = channel("s2", 1, 9, "geral", rid="r")
    early = channel("s1", 1, 4, "geral", rid="r")
    other = channel("s3", 1, 6, "geral")
    b = board_of([late, other, early])
    assert b.outcome(late) is None and b.outcome(early) is None
    assert b.outcome(other) == "channel already exists"
    assert b.channel_list() == ["geral"]


# -- check() ---------------------------------------------------------------------------

@pytest.fixture
def board() -> Board:
    return board_of([login("s1", 1, 1, "ana"), login("s1", 2, 2, "bia"),
                     channel("s1", 3, 3, "geral")])


@pytest.mark.parametrize("kind,fields,words", [
    ("channel", {"channel": "geral"}, "channel already exists"),
    ("publish", {"user": "ana", "channel": "nope", "message": "m"}, "'nope' does not exist"),
    ("publish", {"user": "zoe", "channel": "geral", "message": "m"}, "'zoe' has not logged"),
    ("message", {"src": "zoe", "dst": "ana", "message": "m"}, "'zoe' has not logged"),
    ("message", {"src": "ana", "dst": "zoe", "message": "m"}, "'zoe' has not logged"),
])
def test_check_refuses(board: Board, kind: str, fields: dict, words: str) -> None:
    assert words in (board.check(kind, fields) or "")


@pytest.mark.parametrize("kind,fields", [
    ("channel", {"channel": "news"}),
    ("publish", {"user": "ana", "channel": "geral", "message": "m"}),
    ("message", {"src": "ana", "dst": "bia", "message": "m"}),
    ("message", {"src": "ana", "dst": "ana", "message": "m"}),
    ("login", {"user": "ana"}),
    ("login", {"user": "zoe"}),
])
def test_check_allows(board: Board, kind: str, fields: dict) -> None:
    assert board.check(kind, fields) is None


def test_propose_numbers_own_ops_after_what_the_board_holds() -> None:
    b = board_of([login("r", 1, 1, "ana"), login("r", 4, 2, "bia")])
    op = b.propose("login", {"user": "caio"}, clock=9, timestamp=5.0, rid="x")
    assert (op.id, op.clock, op.timestamp, op.rid) == ("r:5", 9, 5.0, "x")
    assert op.id not in b.ops  # proposed, not applied
    assert b.propose("login", {"user": "d"}, clock=10, timestamp=6.0).seq == 6


def test_apply_is_idempotent() -> None:
    ops = workload(7)
    b = board_of(ops)
    before = observe(b)
    applied = b.applied
    assert all(b.apply(op) is False for op in ops)
    assert b.apply(Op(**ops[0].to_dict())) is False  # an equal copy, not the same object
    assert observe(b) == before and b.applied == applied


def test_every_login_is_recorded_with_its_timestamp() -> None:
    b = board_of([login("s1", 2, 5, "ana", ts=200.0), login("s2", 1, 1, "bia", ts=50.0),
                  login("s1", 1, 2, "ana", ts=100.0), login("s2", 2, 9, "ana", ts=300.0)])
    assert b.user_list() == ["bia", "ana"]
    users = b.snapshot()["usuarios.json"]
    assert [(u["user"], u["logins"]) for u in users] == [
        ("bia", [50.0]), ("ana", [100.0, 200.0, 300.0])]
    assert [x["id"] for x in users[1]["login_ops"]] == ["s1:1", "s1:2", "s2:2"]


def test_hidden_first_login_hands_the_user_to_the_next_login() -> None:
    a1 = login("s1", 1, 5, "ana", rid="r")
    a2 = login("s2", 1, 7, "ana")
    winner = post("s3", 1, 1, "x", "y", "z", rid="r")  # unrelated op holding the same id
    b = board_of([a1, a2, winner])
    assert b.user_list() == ["ana"]
    assert b.snapshot()["usuarios.json"][0]["logins"] == [7.0]
    b = board_of([a1, winner])
    assert b.user_list() == [] and not b.has_user("ana")


# -- version vector and catch-up -------------------------------------------------------

def test_version_vector_fills_gaps_out_of_order() -> None:
    b = Board("r")
    ops = {s: login("s1", s, s, f"u{s}") for s in range(1, 6)}
    steps = [(3, 0), (1, 1), (5, 1), (2, 3), (4, 5)]
    for seq, top in steps:
        b.apply(ops[seq])
        assert b.vector.get("s1", 0) == top
    b.apply(login("s2", 2, 1, "x"))
    assert b.vector == {"s1": 5, "s2": 0}
    assert ids(b.missing_for({"s1": 5}, 10)[0]) == ["s2:2"]


def ids(ops) -> list[str]:
    return [op.id for op in ops]


def test_missing_for_returns_exactly_what_the_peer_lacks() -> None:
    held = [login("s1", s, s, "a") for s in (1, 2, 3, 5)] + [login("s2", s, s, "b")
                                                            for s in (1, 2)]
    b = board_of(held)
    assert b.missing_for({}, 100) == (
        [b.ops[i] for i in ["s1:1", "s1:2", "s1:3", "s1:5", "s2:1", "s2:2"]], False)
    assert ids(b.missing_for({"s1": 2, "s2": 2}, 100)[0]) == ["s1:3", "s1:5"]
    assert ids(b.missing_for({"s1": 3, "s2": 5}, 100)[0]) == ["s1:5"]
    assert b.missing_for({"s1": 9, "s2": 2}, 100) == ([], False)
    assert ids(b.missing_for({"s1": 5, "s3": 4}, 100)[0]) == ["s2:1", "s2:2"]


@pytest.mark.parametrize("limit,expected,more", [
    (1, ["s1:1"], True), (2, ["s1:1", "s1:2"], True), (3, ["s1:1", "s1:2", "s2:1"], False),
    (10, ["s1:1", "s1:2", "s2:1"], False),
])
def test_missing_for_limit_and_more(limit: int, expected: list[str], more: bool) -> None:
    b = board_of([login("s2", 1, 1, "a"), login("s1", 2, 2, "a"), login("s1", 1, 3, "a")])
    out, has_more = b.missing_for({}, limit)
    assert (ids(out), has_more) == (expected, more)


def test_catch_up_by_missing_for_converges() -> None:
    ops = workload(3)
    a = board_of(ops[::2], "a")  # gaps in every origin
    c = board_of(ops[1::3], "c")
    for src, dst in ((a, c), (c, a)):
        out, more = src.missing_for(dst.vector, 10**6)
        assert not more
        for op in out:
            dst.apply(op)
    held = {op.id: op for op in ops[::2] + ops[1::3]}
    assert set(a.ops) == set(c.ops) == set(held)
    assert a.snapshot() == c.snapshot() == board_of(held.values()).snapshot()
    assert len(held) < len(ops)


def test_paged_catch_up_of_a_prefix_converges() -> None:
    ops = workload(5)
    src = board_of(ops, "a")
    dst = board_of([op for op in ops if op.seq <= 3], "c")
    pages = 0
    while True:
        out, more = src.missing_for(dst.vector, 4)
        assert len(out) <= 4 and all(dst.apply(op) for op in out)
        pages += 1
        if not more:
            break
    assert pages == -(-(len(ops) - 9) // 4)
    assert observe(dst)["snapshot"] == observe(src)["snapshot"]
    assert dst.vector == src.vector == {o: 14 for o in ORIGINS}


# -- history ---------------------------------------------------------------------------

def posts_board(clocks: list[tuple[str, int]]) -> Board:
    ops = [channel("s0", 1, 0, "geral"), channel("s0", 2, 0, "outro")]
    seqs: dict[str, int] = {}
    for origin, clock in clocks:
        seqs[origin] = seqs.get(origin, 0) + 1
        ops.append(post(origin, seqs[origin], clock, "ana", "geral", f"{origin}@{clock}"))
    ops.append(post("s9", 1, 4, "ana", "outro", "elsewhere"))
    ops.append(dm("s9", 2, 5, "ana", "bia", "to bia"))
    ops.append(dm("s9", 3, 6, "bia", "caio", "to caio"))
    random.Random(0).shuffle(ops)
    return board_of(ops)


def test_history_limit_and_before() -> None:
    b = posts_board([("s1", c) for c in range(1, 11)])
    msgs = lambda items: [i["message"] for i in items]  # noqa: E731
    assert msgs(b.history("channel", "geral", 3, None)) == ["s1@8", "s1@9", "s1@10"]
    first = lambda: [i["id"] for i in b.history("channel", "geral", 100, None)]  # noqa: E731
    ids_by_clock = first()
    assert msgs(b.history("channel", "geral", 3, ids_by_clock[7])) == ["s1@5", "s1@6", "s1@7"]
    assert msgs(b.history("channel", "geral", 100, ids_by_clock[2])) == ["s1@1", "s1@2"]
    assert b.history("channel", "geral", 5, ids_by_clock[0]) == []
    with pytest.raises(ValueError, match="unknown operation id"):
        b.history("channel", "geral", 5, "nobody:1")
    assert len(b.history("channel", "geral", 100, None)) == 10
    assert b.history("channel", "nope", 5, None) == []
    assert msgs(b.history("user", "bia", 10, None)) == ["to bia", "to caio"]
    assert msgs(b.history("user", "ana", 10, None)) == ["to bia"]
    assert b.history("user", "zoe", 10, None) == []
    item = b.history("channel", "outro", 1, None)[0]
    assert item == {"user": "ana", "channel": "outro", "message": "elsewhere",
                    "timestamp": 4.0, "clock": 4, "id": "s9:1"}


def page_all(b: Board, limit: int) -> list[str]:
    seen: list[str] = []
    before = None
    for _ in range(100):
        page = b.history("channel", "geral", limit, before)
        if not page:
            break
        seen[:0] = [i["id"] for i in page]
        before = page[0]["id"]
    return seen


def test_paging_without_clock_ties_visits_every_post_once() -> None:
    b = posts_board([("s1", c) for c in range(1, 12)])
    assert page_all(b, 3) == [e["id"] for e in b.history("channel", "geral", 1000, None)]


def test_paging_with_concurrent_posts_of_equal_clock_visits_every_post_once() -> None:
    b = posts_board([("s1", 1), ("s1", 2), ("s2", 2), ("s1", 3), ("s2", 3), ("s1", 4)])
    assert page_all(b, 2) == [e["id"] for e in b.history("channel", "geral", 1000, None)]


# -- snapshots, files and serialisation ------------------------------------------------

def test_snapshot_entries() -> None:
    b = board_of([channel("s1", 1, 1, "geral"), login("s1", 2, 2, "ana", ts=9.5),
                  post("s1", 3, 3, "ana", "geral", "oi"), dm("s1", 4, 4, "ana", "ana", "eu")])
    assert b.snapshot() == {
        "usuarios.json": [{"user": "ana", "logins": [9.5],
                           "login_ops": [{"id": "s1:2", "timestamp": 9.5, "clock": 2}]}],
        "canais.json": [{"channel": "geral", "timestamp": 1.0, "clock": 1, "id": "s1:1"}],
        "publicacoes.json": [{"user": "ana", "channel": "geral", "message": "oi",
                              "timestamp": 3.0, "clock": 3, "id": "s1:3"}],
        "mensagens.json": [{"src": "ana", "dst": "ana", "message": "eu", "timestamp": 4.0,
                            "clock": 4, "id": "s1:4"}],
    }
    assert b.history("user", "ana", 10, None) == b.snapshot()["mensagens.json"]


@pytest.mark.parametrize("seed", range(3))
def test_ops_from_files_round_trips_the_visible_ops(seed: int) -> None:
    b = board_of(workload(seed))
    snap = b.snapshot()
    restored = list(ops_from_files(snap))
    visible = {op.id for op in b.ops.values() if b.visible(op)}
    assert sorted(ids(restored)) == sorted(visible)
    for op in restored:
        orig = b.ops[op.id]
        assert (op.kind, op.clock, op.timestamp, op.fields) == (
            orig.kind, orig.clock, orig.timestamp, orig.fields)
    assert board_of(restored).snapshot() == snap


def test_ops_from_files_skips_unplaceable_entries() -> None:
    good = {"channel": "g", "timestamp": 1.0, "clock": 1, "id": "s1:1"}
    files = {
        "canais.json": [good, {**good, "id": "nope"}, {**good, "id": None},
                        {**good, "clock": "x"}, {**good, "channel": 5},
                        {k: v for k, v in good.items() if k != "timestamp"}],
        "publicacoes.json": None,
        "usuarios.json": [{"user": "ana", "logins": [1.0]}, "junk",
                          {"user": "bia", "login_ops": ["x", {"id": "s2:3", "clock": 2,
                                                              "timestamp": 2.0}]},
                          {"user": 7, "login_ops": [{"id": "s2:4", "clock": 3,
                                                     "timestamp": 3.0}]}],
    }
    assert ids(ops_from_files(files)) == ["s1:1", "s2:3"]


@pytest.mark.parametrize("files,expected", [
    ({"canais.json": [{"channel": "g", "timestamp": 1.0, "clock": 1, "id": "s1:1"}, "junk"]},
     ["s1:1"]),
    ({"publicacoes.json": [None]}, []), ({"mensagens.json": [3]}, []),
    ({"canais.json": {"channel": "g"}}, []),
    ({"usuarios.json": [{"user": "a", "login_ops": 5}]}, []),
], ids=repr)
def test_ops_from_files_skips_entries_that_are_not_maps(files: dict, expected: list) -> None:
    assert ids(ops_from_files(files)) == expected


def test_board_restored_from_files_still_hides_request_id_losers() -> None:
    setup = [channel("s1", 1, 1, "geral"), login("s1", 2, 2, "ana")]
    first = post("s1", 3, 3, "ana", "geral", "hi", rid="r")
    retry = post("s2", 1, 8, "ana", "geral", "hi", rid="r")
    full = board_of(setup + [first])
    restored = board_of(ops_from_files(full.snapshot()))
    full.apply(retry)
    restored.apply(retry)
    assert restored.snapshot() == full.snapshot()


def test_op_dict_round_trip() -> None:
    for op in workload(1):
        again = Op.from_dict(op.to_dict())
        assert again == op and again.id == op.id and again.order == op.order
    assert "rid" not in login("s1", 1, 1, "a").to_dict()


GOOD = {"origin": "s1", "seq": 3, "clock": 7, "kind": "publish", "timestamp": 1.5,
        "fields": {"user": "ana", "channel": "g", "message": "m"}}


@pytest.mark.parametrize("change", [
    {"origin": None}, {"seq": None}, {"clock": None}, {"kind": None}, {"timestamp": None},
    {"fields": None}, {"seq": "three"}, {"clock": "x"}, {"timestamp": "noon"},
    {"fields": "user=ana"}, {"fields": [1, 2]}, {"kind": "delete"},
    {"fields": {"user": "ana", "channel": "g"}},
    {"kind": "message"}, {"kind": "login", "fields": {"channel": "g"}},
    {"kind": "channel", "fields": {"user": "ana"}},
], ids=repr)
def test_op_from_dict_rejects_malformed(change: dict) -> None:
    d = {**GOOD, **change}
    d = {k: v for k, v in d.items() if v is not None}
    with pytest.raises(ValueError, match="malformed"):
        Op.from_dict(d)


@pytest.mark.parametrize("change", [
    {"fields": {"user": None, "channel": "g", "message": "m"}},
    {"fields": {"user": ["ana"], "channel": "g", "message": "m"}},
    {"seq": 0}, {"seq": -1}, {"seq": 2.7},
], ids=repr)
def test_op_from_dict_rejects_wrong_types(change: dict) -> None:
    with pytest.raises(ValueError):
        Op.from_dict({**GOOD, **change})


@pytest.mark.parametrize("change", [
    {"clock": 2**53}, {"clock": 2**64 - 200}, {"clock": -1}, {"seq": 2**63},
    {"timestamp": float("nan")}, {"timestamp": float("inf")},
    {"origin": ""}, {"origin": "x" * 65}, {"origin": "evil\u202euser"},
    {"fields": {"user": "servers", "channel": "g", "message": "m"}},
    {"fields": {"user": "evil\u202euser\x00", "channel": "g", "message": "m"}},
    {"fields": {"user": "ana", "channel": "\u0301", "message": "m"}},
    {"fields": {"user": "ana", "channel": "g", "message": "x" * 300_000}},
    {"fields": {"user": "ana", "channel": "g", "message": "   "}},
    {"fields": {"user": "ana", "channel": "g", "message": "m", "extra": "x" * 1000}},
    {"rid": "r" * 129}, {"rid": ""},
], ids=lambda c: repr(c)[:60])
def test_a_forged_operation_is_refused_like_a_client_request(change: dict) -> None:
    """A replicated operation gets no further than a client's request would."""
    with pytest.raises(ValueError):
        Op.from_dict({**GOOD, **change})


@pytest.mark.parametrize("text,expected", [("s1:3", ("s1", 3)), ("a:b:12", ("a:b", 12))])
def test_parse_op_id(text: str, expected: tuple) -> None:
    assert parse_op_id(text) == expected


@pytest.mark.parametrize("text", ["", "s1", ":3", "s1:", "s1:x", "s1:-1"])
def test_parse_op_id_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_op_id(text)


def test_entry_does_not_alias_op_fields() -> None:
    op = post("s1", 1, 1, "ana", "g", "m")
    entry(op)["user"] = "mallory"
    assert op.fields["user"] == "ana"


def test_views_report_the_lowest_index_changed_since_the_last_take() -> None:
    b = Board("r")
    assert b.posts.take_changed() == 0 and b.users_order.take_changed() == 0
    b.apply(login("a", 1, 1, "ana"))
    b.apply(login("a", 2, 2, "bia"))
    b.apply(channel("a", 3, 3, "geral"))
    for i in range(5):
        b.apply(post("a", 10 + i, 10 + i, "ana", "geral", f"m{i}"))
    assert b.posts.take_changed() == 0  # everything is new
    assert b.posts.take_changed() == 5  # nothing since
    b.apply(post("a", 20, 20, "ana", "geral", "end"))
    assert b.posts.take_changed() == 5
    b.apply(post("b", 1, 12, "ana", "geral", "late"))  # sorts third
    b.apply(post("a", 21, 30, "ana", "geral", "after"))
    assert b.posts.take_changed() == 3
    b.apply(channel("b", 2, 1, "geral"))  # wins the name: the first one is hidden
    assert b.channels.take_changed() == 0
    assert b.users_order.take_changed() == 0
    b.apply(login("a", 30, 40, "bia"))  # bia's entry (second) lists one more login
    assert b.users_order.take_changed() == 1


# -- compact operations, per-origin logs, missing_for on gaps ---------------------------

def brute_missing(held: list[Op], vector: dict[str, int], limit: int,
                  after: tuple[str, int] | None) -> tuple[list[str], bool]:
    """missing_for the slow obvious way: every held op past the peer's vector and the
    cursor, in (origin, seq) order."""
    want = sorted((op.origin, op.seq) for op in held
                  if op.seq > vector.get(op.origin, 0)
                  and (after is None or (op.origin, op.seq) > after))
    return [f"{o}:{s}" for o, s in want[:limit]], len(want) > limit


@pytest.mark.parametrize("seed", range(30))
def test_missing_for_matches_a_scan_of_everything_held(seed: int) -> None:
    rng = random.Random(seed)
    held = [login(origin, s, s, "a") for origin in ORIGINS
            for s in range(1, rng.randint(0, 40)) if rng.random() < 0.8]
    rng.shuffle(held)
    b = board_of(held)
    for _ in range(20):
        vector = {o: rng.randint(0, 45) for o in ORIGINS if rng.random() < 0.7}
        after = (rng.choice(ORIGINS), rng.randint(0, 45)) if rng.random() < 0.5 else None
        limit = rng.randint(1, 60)
        out, more = b.missing_for(vector, limit, after)
        assert (ids(out), more) == brute_missing(held, vector, limit, after)


def test_missing_for_pages_through_a_gap_with_the_cursor() -> None:
    held = [login("s1", s, s, "a") for s in (*range(1, 8), 10, 11, 15)]
    b = board_of(held)
    assert b.vector == {"s1": 7}
    pages, after = [], None
    while True:
        out, more = b.missing_for({"s1": 5}, 2, after)
        pages.append(ids(out))
        if not more:
            break
        after = (out[-1].origin, out[-1].seq)
    assert pages == [["s1:6", "s1:7"], ["s1:10", "s1:11"], ["s1:15"]]


def test_a_sequence_far_beyond_the_vector_is_held_without_filling_the_gap() -> None:
    b = Board("r")
    far = login("s1", 2**50, 3, "a")
    assert b.apply(far) and b.vector == {"s1": 0}
    assert b.holds(far) and b.ops["s1:" + str(2**50)] is far
    assert b.apply(login("s1", 1, 1, "a")) and b.vector == {"s1": 1}
    assert ids(b.missing_for({}, 10)[0]) == ["s1:1", f"s1:{2**50}"]


def test_gaps_filled_later_join_the_dense_log() -> None:
    b = Board("r")
    for s in (4, 2, 3, 6):
        b.apply(login("s1", s, s, "a"))
    assert b.vector == {"s1": 0} and b.get("s1", 3) is not None and b.get("s1", 5) is None
    b.apply(login("s1", 1, 1, "a"))
    assert b.vector == {"s1": 4}
    b.apply(login("s1", 5, 5, "a"))
    assert b.vector == {"s1": 6} and [op.seq for op in b.held()] == [1, 2, 3, 4, 5, 6]
    assert b.apply(login("s1", 3, 3, "a")) is False and b.applied == 6


def test_the_ops_and_winners_views_read_the_board() -> None:
    first = channel("s1", 1, 1, "geral", rid="r1")
    later = channel("s2", 1, 2, "geral", rid="r2")
    b = board_of([later, first])
    assert len(b.ops) == 2 and "s1:1" in b.ops and "s2:1" in b.ops
    assert b.ops["s2:1"] is later and b.ops.get("s3:1") is None
    for bad in ("s1:9", "nope", "s1:", ":1"):
        assert bad not in b.ops
    assert set(b.ops) == {"s1:1", "s2:1"}
    assert dict(b.winners) == {"channel:geral": first, "rid:r1": first, "rid:r2": later}
    assert "other:x" not in b.winners and "channel:none" not in b.winners
    assert b.by_rid("r2") is later and b.outcome(later) == "channel already exists"


def test_operations_compare_by_their_place_in_the_total_order() -> None:
    ops = workload(5)
    assert sorted(ops) == sorted(ops, key=lambda o: o.order)
    a, c = login("s1", 1, 1, "a"), login("s2", 1, 1, "a")
    assert a < c and a.order < c.order and a != c
    assert a == Op.from_dict(a.to_dict()) and hash(a) == hash(Op.from_dict(a.to_dict()))


def test_names_are_stored_once_however_often_they_arrive() -> None:
    import json

    raw = json.dumps(post("servidor-1", 1, 1, "ana", "geral", "oi").to_dict())
    one, two = (Op.from_dict(json.loads(raw)), Op.from_journal(json.loads(raw)))
    assert one.origin is two.origin and one.f1 is two.f1 and one.f2 is two.f2
    assert one == two


def test_from_journal_rebuilds_what_from_dict_does() -> None:
    for op in workload(2):
        d = op.to_dict()
        assert Op.from_journal(d) == Op.from_dict(d) == op
    assert Op.from_journal({**GOOD, "timestamp": 2}).timestamp == 2.0


# Records that are not operations: the journal's readers refuse each of them.
NOT_OPERATIONS = [
    None, [], "op", 7, {}, {**GOOD, "kind": "delete"}, {**GOOD, "kind": ["publish"]},
    {**GOOD, "fields": None}, {**GOOD, "fields": ["ana", "g", "m"]},
    {**GOOD, "fields": {"user": "ana", "channel": "g"}},
    {**GOOD, "fields": {"user": "ana", "channel": "g", "message": "m", "x": "y"}},
    {**GOOD, "fields": {"user": 5, "channel": "g", "message": "m"}},
    {**GOOD, "fields": {"user": "ana", "channel": None, "message": "m"}},
    {**GOOD, "fields": {"user": "ana", "channel": "g", "message": ""}},
    {**GOOD, "fields": {"user": "ana", "channel": "g", "message": {"t": 1}}},
    {**GOOD, "origin": 1}, {**GOOD, "origin": ""}, {**GOOD, "origin": None},
    {**GOOD, "seq": "3"}, {**GOOD, "seq": 0}, {**GOOD, "seq": 3.0}, {**GOOD, "seq": True},
    {**GOOD, "seq": 2**64}, {**GOOD, "clock": -1}, {**GOOD, "clock": "7"},
    {**GOOD, "clock": 2**53}, {**GOOD, "timestamp": "noon"}, {**GOOD, "timestamp": None},
    {**GOOD, "timestamp": True}, {**GOOD, "timestamp": float("nan")},
    {**GOOD, "rid": 5}, {**GOOD, "rid": ""}, {"kind": "login", "fields": {"user": "a"}},
    {**GOOD, "fields": {"user": "ana", "chan": "g", "message": "m"}},
    {**GOOD, "kind": "login"}, {**GOOD, "kind": "login", "fields": {"user": ""}},
]


@pytest.mark.parametrize("record", NOT_OPERATIONS, ids=lambda r: repr(r)[:70])
def test_from_journal_refuses_a_record_of_the_wrong_types(record: object) -> None:
    with pytest.raises(ValueError, match="not an operation"):
        Op.from_journal(record)


def test_replay_applies_the_good_records_and_says_why_it_refused_the_others() -> None:
    ops = workload(4)
    records = [op.to_dict() for op in ops]
    records[3:3] = [{**GOOD, "seq": "x"}, ["not", "a", "map"]]
    b = Board("r")
    top, refused = b.replay(records)
    assert top == max(op.clock for op in ops)
    assert len(refused) == 2 and all("not an operation" in why for why in refused)
    assert b.snapshot() == board_of(ops).snapshot()
    assert b.replay([]) == (0, [])


def test_names_remembered_as_valid_change_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    from bbd import state

    monkeypatch.setattr(state, "_GOOD_NAMES", set())
    monkeypatch.setattr(state, "_GOOD_NAMES_MAX", 3)
    evil = "evil\u202euser"
    for _ in range(2):
        Op.from_dict(GOOD)  # s1, ana and g remembered
        with pytest.raises(ValueError, match="control characters"):
            Op.from_dict({**GOOD, "fields": {**GOOD["fields"], "user": evil}})
        with pytest.raises(ValueError, match="reserved"):
            Op.from_dict({**GOOD, "origin": "servers"})
    assert evil not in state._GOOD_NAMES and "servers" not in state._GOOD_NAMES
    Op.from_dict({**GOOD, "fields": {**GOOD["fields"], "user": "bia"}})
    assert len(state._GOOD_NAMES) <= 3  # bounded: emptied when full


def test_operations_survive_copy_and_pickle() -> None:
    import copy
    import pickle

    for op in workload(6)[:10]:
        for again in (copy.copy(op), copy.deepcopy(op), pickle.loads(pickle.dumps(op))):
            assert type(again) is Op and again == op and again.fields == op.fields


def test_late_operations_are_merged_in_order_with_the_right_low_water_mark() -> None:
    # A catch-up's pages come per origin, not in the total order: many late adds, one merge.
    from bbd.state import _Sorted

    ops = [Op(f"s{k % 3}", k // 3 + 1, k, "channel", 0.0, {"channel": f"c{k}"})
           for k in range(300)]
    shuffled = ops[:]
    random.Random(7).shuffle(shuffled)
    s = _Sorted()
    for op in ops[:100]:
        s.add(op)
    assert s.take_changed() == 0
    for op in shuffled:
        if op not in ops[:100]:
            s.add(op)
    assert len(s) == 300
    lowest = min(ops.index(op) for op in shuffled if op not in ops[:100])
    assert s.take_changed() == lowest  # read: merged, and the files rewrite from there
    assert s.items == ops and list(s) == ops and s.first() == ops[0]
    s.remove(ops[150])
    assert s.take_changed() == 150 and len(s) == 299


# -- bulk loading (a start's journal) ----------------------------------------------------

def assert_same_board(a: Board, b: Board) -> None:
    """Two boards that hold the same operations and show them alike, view by view."""
    assert a.snapshot() == b.snapshot()
    assert (a.applied, a.vector, a.next_seq) == (b.applied, b.vector, b.next_seq)
    assert dict(a.winners) == dict(b.winners) and sorted(a.ops) == sorted(b.ops)
    assert a.user_list() == b.user_list() and a.channel_list() == b.channel_list()
    for name in CHANNELS:
        assert a.history("channel", name, 100, None) == b.history("channel", name, 100, None)
    for name in USERS:
        assert a.history("user", name, 100, None) == b.history("user", name, 100, None)
    assert all(a.visible(op) == b.visible(b.ops[op_id]) for op_id, op in a.ops.items())
    assert a.missing_for({}, 1000) == b.missing_for({}, 1000)


@pytest.mark.parametrize("seed", range(12))
def test_a_bulk_load_builds_the_board_that_applying_one_by_one_builds(seed: int) -> None:
    ops = workload(seed, per_origin=30)
    random.Random(seed).shuffle(ops)  # a journal's order: neither seq nor total order
    loaded = Board("s2")
    loaded.load(ops)
    assert loaded._dense and not loaded._beyond  # the bulk way was taken
    assert_same_board(loaded, board_of(ops, "s2"))
    assert loaded.next_seq == 31
    extra = post("s1", 31, 999, "ana", "geral", "after the load")
    assert loaded.apply(extra) and not loaded.apply(extra)  # it goes on like any board
    assert_same_board(loaded, board_of([*ops, extra], "s2"))


@pytest.mark.parametrize("cut", ["gap", "repeat", "not empty"])
def test_a_bulk_load_that_cannot_be_bulk_applies_one_by_one(cut: str) -> None:
    ops = workload(3)
    if cut == "gap":
        ops = [op for op in ops if op.id != "s2:5"]
    elif cut == "repeat":
        ops = [*ops, ops[7]]
    loaded = Board("r")
    if cut == "not empty":
        loaded.apply(ops[0])
    loaded.load(ops)
    assert_same_board(loaded, board_of(ops))


def test_replay_takes_operations_as_they_are_and_records_through_from_journal() -> None:
    ops = workload(5)
    records: list = [op.to_dict() for op in ops[:10]] + ops[10:]
    b = Board("r")
    assert b.replay(records) == (max(op.clock for op in ops), [])
    assert_same_board(b, board_of(ops))


def test_ops_from_json_makes_what_from_journal_makes() -> None:
    import json

    from bbd.state import ops_from_json

    ops = workload(8)
    array = json.dumps([{**op.to_dict(), "extra": [1]} for op in ops]).encode()
    got = ops_from_json(array)
    assert got == [Op.from_journal(op.to_dict()) for op in ops] == ops
    assert all(type(op) is Op for op in got)
    again = ops_from_json(array)
    assert again[0].origin is got[0].origin and again[0].f1 is got[0].f1  # interned
    assert ops_from_json(json.dumps([{**GOOD, "timestamp": 2}]).encode())[0].timestamp == 2.0
    assert ops_from_json(b"[]") == []


@pytest.mark.parametrize("record", NOT_OPERATIONS, ids=lambda r: repr(r)[:70])
def test_ops_from_json_refuses_what_from_journal_refuses(record: object) -> None:
    """One record from_journal would refuse sends the whole array the slow way."""
    import json

    from bbd.state import ops_from_json

    with pytest.raises(ValueError, match="not an operation"):
        Op.from_journal(record)
    assert ops_from_json(json.dumps([GOOD, record, GOOD]).encode()) is None


# -- a pull page checked in bulk -----------------------------------------------------------

_BAD_ON_THE_WIRE = [
    {"origin": None}, {"seq": None}, {"clock": None}, {"kind": None}, {"timestamp": None},
    {"fields": None}, {"seq": "three"}, {"clock": "x"}, {"timestamp": "noon"},
    {"fields": "user=ana"}, {"fields": [1, 2]}, {"kind": "delete"},
    {"fields": {"user": "ana", "channel": "g"}}, {"kind": "message"},
    {"kind": "login", "fields": {"channel": "g"}}, {"kind": "channel", "fields": {"user": "a"}},
    {"fields": {"user": None, "channel": "g", "message": "m"}},
    {"fields": {"user": ["ana"], "channel": "g", "message": "m"}},
    {"seq": 0}, {"seq": -1}, {"seq": 2.7}, {"seq": 3.0}, {"seq": True}, {"clock": False},
    {"clock": 2**53}, {"clock": 2**64 - 200}, {"clock": -1}, {"seq": 2**63},
    {"timestamp": float("nan")}, {"timestamp": float("inf")}, {"timestamp": True},
    {"origin": ""}, {"origin": "x" * 65}, {"origin": "evil\u202euser"}, {"origin": 5},
    {"fields": {"user": "servers", "channel": "g", "message": "m"}},
    {"fields": {"user": "evil\u202euser\x00", "channel": "g", "message": "m"}},
    {"fields": {"user": "ana", "channel": "\u0301", "message": "m"}},
    {"fields": {"user": "ana", "channel": "g", "message": "x" * 300_000}},
    {"fields": {"user": "ana", "channel": "g", "message": "   "}},
    {"fields": {"user": "ana", "channel": "g", "message": 7}},
    {"fields": {"user": "ana", "channel": "g", "message": "m", "extra": "x" * 1000}},
    {"fields": {"user": "ana", "channel": " g", "message": "m"}},
    {"rid": "r" * 129}, {"rid": ""}, {"rid": 5},
]


def _without_nones(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


@pytest.mark.parametrize("change", _BAD_ON_THE_WIRE, ids=lambda c: repr(c)[:60])
def test_a_page_checked_in_bulk_refuses_what_from_dict_refuses(change: dict) -> None:
    from bbd.state import ops_from_dicts

    bad = _without_nones({**GOOD, **change})
    with pytest.raises(ValueError) as one:
        Op.from_dict(bad)
    page = [GOOD, {**GOOD, "seq": 4}, bad, {**GOOD, "seq": 5}]
    with pytest.raises(ValueError) as bulk:
        ops_from_dicts(page)
    assert str(bulk.value) == str(one.value)
    with pytest.raises(ValueError):
        ops_from_dicts(["not a map", GOOD])


@pytest.mark.parametrize("seed", range(4))
def test_a_page_checked_in_bulk_makes_what_from_dict_makes(seed: int) -> None:
    import msgpack

    from bbd.state import _ops_from_dicts, ops_from_dicts

    ops = workload(seed, per_origin=40)
    for page in ([op for op in ops if op.kind == kind] for kind in
                 ("publish", "message", "login", "channel")):
        page += [post("s9", 1, 1, "ana", "geral", "ts an int").to_dict() | {"timestamp": 5}]
        wire = msgpack.unpackb(msgpack.packb([op if isinstance(op, dict) else op.to_dict()
                                              for op in page]))
        got = ops_from_dicts(wire)
        assert got == [Op.from_dict(d) for d in wire]
        assert all(type(op) is Op and type(op.timestamp) is float for op in got)
        assert all(a.f1 is b.f1 and a.origin is b.origin  # names interned alike
                   for a, b in zip(got, [Op.from_dict(d) for d in wire], strict=True))
    assert ops_from_dicts(msgpack.unpackb(msgpack.packb([op.to_dict() for op in ops]))) == ops
    assert ops_from_dicts([]) == []
    one_kind = [post("s1", s, s, "ana", "geral", f"m{s}").to_dict() for s in range(1, 9)]
    assert _ops_from_dicts(one_kind) is not None  # the bulk way was taken


@pytest.mark.parametrize("seed", range(8))
def test_pages_applied_at_once_build_the_board_applying_one_by_one_builds(seed: int) -> None:
    """A catch-up's pages: in (origin, seq) order, of any kinds; pages of new posts and
    messages take the bulk way, the others the one-by-one way, and the board is the same."""
    rng = random.Random(seed)
    ops = workload(seed, per_origin=40)
    ops += [post(o, s, 100 + s, rng.choice(USERS), rng.choice(CHANNELS), f"late {o}{s}",
                 rid=f"r{o}{s}") for o in ORIGINS for s in range(41, 90)]
    ops += [dm(o, s, 60 + s, rng.choice(USERS), rng.choice(USERS), f"dm {o}{s}")
            for o in ORIGINS for s in range(90, 120)]
    ops.sort(key=lambda op: (op.origin, op.seq))
    paged = Board("s1")
    taken: list[bool] = []
    real = paged._apply_page
    paged._apply_page = lambda page: taken.append(real(page)) or taken[-1]  # type: ignore
    at = 0
    while at < len(ops):
        page = ops[at:at + rng.randint(1, 40)]
        at += len(page)
        assert paged.apply_many(page) == len(page)
    assert any(taken) and not all(taken)  # both ways taken
    assert_same_board(paged, board_of(ops, "s1"))
    assert paged.apply_many(ops[:5]) == 0
    assert_same_board(paged, board_of(ops, "s1"))
    # The bulk way was taken for the pages it is for:
    fresh = Board("s1")
    fresh.load(ops[:10])
    page = [post("s1", s, 500 + s, "ana", "geral", f"p{s}", rid=f"new{s}")
            for s in range(fresh.vector.get("s1", 0) + 1, fresh.vector.get("s1", 0) + 6)]
    assert fresh._apply_page(page) and fresh.vector["s1"] == page[-1].seq
    assert not fresh._apply_page(page)  # held already: not the bulk way's


# -- a pull page of rows -------------------------------------------------------------------

GOOD_ROW = [7, "s1", 3, "publish", 1.5, None, "ana", "g", "m"]


@pytest.mark.parametrize("change", [
    {0: -1}, {0: 2**53}, {0: "7"}, {0: True}, {1: ""}, {1: None}, {1: "evil\u202euser"},
    {1: "servers"}, {2: 0}, {2: 3.0}, {2: False}, {3: "delete"}, {3: None}, {3: "login"},
    {4: float("nan")}, {4: float("-inf")}, {4: "noon"}, {4: True}, {5: ""}, {5: "r" * 129},
    {5: 5}, {6: None}, {6: ""}, {6: " ana"}, {7: None}, {7: "\u0301"}, {8: None},
    {8: "   "}, {8: "x" * 300_000}, {8: 7}, {"short": True}, {"long": True},
], ids=lambda c: repr(c)[:40])
def test_a_page_of_rows_refuses_what_from_dict_refuses(change: dict) -> None:
    from bbd.state import _map_of_row, ops_from_rows

    bad: Any = list(GOOD_ROW)
    for at, value in change.items():
        if at == "short":
            bad = bad[:8]
        elif at == "long":
            bad = [*bad, "x"]
        else:
            bad[at] = value
    with pytest.raises(ValueError) as one:
        Op.from_dict(_map_of_row(bad))
    with pytest.raises(ValueError) as bulk:
        ops_from_rows([GOOD_ROW, bad, [8, "s1", 4, "login", 2.0, "r", "bia", None, None]])
    assert str(bulk.value) == str(one.value)


def test_a_login_row_with_more_fields_is_refused() -> None:
    from bbd.state import ops_from_rows

    with pytest.raises(ValueError, match="malformed"):
        ops_from_rows([[8, "s1", 4, "login", 2.0, None, "bia", "x", None]])
    with pytest.raises(ValueError, match="malformed"):
        ops_from_rows(["not a row"])


@pytest.mark.parametrize("seed", range(4))
def test_a_page_of_rows_makes_what_from_dict_makes(seed: int) -> None:
    import msgpack

    from bbd.state import _map_of_row, ops_from_rows

    ops = workload(seed, per_origin=40)
    wire = msgpack.unpackb(msgpack.packb(ops))  # a namedtuple goes as an array
    assert wire[0] == list(ops[0])
    got = ops_from_rows(wire)
    assert got == ops == [Op.from_dict(_map_of_row(row)) for row in wire]
    assert all(type(op) is Op for op in got) and got[0].origin is ops[0].origin
    assert ops_from_rows([]) == []
    as_int = [[*GOOD_ROW[:4], 2, *GOOD_ROW[5:]]]
    assert ops_from_rows(as_int)[0].timestamp == 2.0 and type(ops_from_rows(as_int)[0][4]) is float


def test_ops_from_files_skips_the_entries_held_already() -> None:
    ops = workload(3)
    board = board_of(ops[:20])
    files = board_of(ops).snapshot()
    fresh = list(ops_from_files(files, board.get))
    assert fresh and all(board.get(op.origin, op.seq) is None for op in fresh)
    assert sorted(fresh) == sorted(op for op in ops_from_files(files) if not board.holds(op))
