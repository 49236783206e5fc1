"""The nemesis's plan and the checker, without a cluster: a plan is reproducible from its
seed, and the checker finds each kind of violation it names (and nothing in a clean run)."""

from __future__ import annotations

import json

from bbd.chaos.checker import check
from bbd.chaos.schedule import KINDS, MAX_SKEW, plan
from bbd.chaos.workload import ACKED, REFUSED, TIMED_OUT, Request
from bbd.state import Board

SERVERS = ["servidor-1", "servidor-2", "servidor-3"]


def test_plan_is_reproducible_and_starts_with_every_kind() -> None:
    a = plan(7, 40, SERVERS)
    assert a == plan(7, 40, SERVERS)
    assert plan(7, 12, SERVERS) == a[:12]  # a longer run only adds faults at the end
    assert a != plan(8, 40, SERVERS)
    assert sorted(f.kind for f in a[:len(KINDS)]) == sorted(KINDS)
    for f in a:
        assert 1.0 <= f.hold <= 4.0 and 1.0 <= f.gap <= 3.0
        if f.kind == "clock-jump":
            assert f.skew is not None and abs(f.skew) <= MAX_SKEW and f.target in SERVERS
        elif f.kind.startswith("restart-"):
            assert f.target == f.kind.removeprefix("restart-")


class Run:
    """Requests and the files a board holding exactly the acknowledged writes renders."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.board = Board("servidor-1")
        self.clock = 0

    def write(self, client: str, rid: str, service: str, fields: dict, outcome: str = ACKED,
              start: float = 1.0, end: float = 1.1, apply: bool = True) -> None:
        status = {"channel": "sucesso", "login": "sucesso"}.get(service, "OK")
        self.requests.append(Request(client, rid, service, fields, start, end, outcome,
                                     status if outcome == ACKED else "erro"))
        if apply:
            self.clock += 1
            self.board.apply(self.board.propose(service, fields, clock=self.clock,
                                                timestamp=1.0, rid=rid))

    def files(self) -> dict[str, str]:
        return {name: json.dumps(content) for name, content in self.board.snapshot().items()}


def clean_run() -> Run:
    r = Run()
    r.write("setup", "s-1", "login", {"user": "c1"})
    r.write("setup", "s-2", "login", {"user": "c2"})
    r.write("setup", "s-3", "channel", {"channel": "geral"})
    r.write("c1", "c1-1", "publish", {"user": "c1", "channel": "geral", "message": "c1 post 1"})
    r.write("c2", "c2-1", "message", {"src": "c2", "dst": "c1", "message": "c2 note 1"})
    r.write("c2", "c2-2", "channel", {"channel": "sala-1"})
    # Timed out: one applied anyway, one not: both fine.
    r.write("c1", "c1-2", "publish", {"user": "c1", "channel": "geral", "message": "c1 post 2"},
            outcome=TIMED_OUT)
    r.write("c1", "c1-3", "publish", {"user": "c1", "channel": "geral", "message": "c1 post 3"},
            outcome=TIMED_OUT, apply=False)
    r.write("c1", "c1-4", "channel", {"channel": "sala-1"}, outcome=REFUSED, apply=False)
    return r


SEEN = {"c1": {"geral": {"c1 post 1"}}}


def verdict(r: Run, files: dict[str, dict[str, str]] | None = None,
            partitions: list | None = None, seen: dict | None = None):
    files = files or {n: r.files() for n in SERVERS}
    return check(r.requests, files, partitions or [], SEEN if seen is None else seen)


def kinds(v) -> set[str]:
    return {x.kind for x in v.violations}


def test_clean_run_passes_with_counts() -> None:
    v = verdict(clean_run())
    assert v.ok, v.violations
    assert v.counts["operations"] == 9
    assert v.counts[ACKED] == 6 and v.counts[TIMED_OUT] == 2 and v.counts[REFUSED] == 1
    assert v.counts["by_service"]["publish"] == {ACKED: 1, TIMED_OUT: 2}


def test_a_lost_acknowledged_write_on_one_server() -> None:
    r = clean_run()
    lossy = Run()
    for req in r.requests:  # the same board without c1's acknowledged post
        if req.rid != "c1-1" and req.outcome == ACKED or req.rid == "c1-2":
            lossy.clock += 1
            lossy.board.apply(lossy.board.propose(req.service, req.fields, clock=lossy.clock,
                                                  timestamp=1.0, rid=req.rid))
    files = {"servidor-1": r.files(), "servidor-2": r.files(), "servidor-3": lossy.files()}
    v = verdict(r, files)
    assert kinds(v) == {"acknowledged write lost", "files differ"}
    lost = [x for x in v.violations if x.kind == "acknowledged write lost"]
    assert [(x.rids, x.server) for x in lost] == [(["c1-1"], "servidor-3")]


def test_a_duplicate_an_unknown_an_altered_and_a_refused_write() -> None:
    r = clean_run()
    files = r.files()
    posts = json.loads(files["publicacoes.json"])
    posts.append(dict(posts[0], id="servidor-2:99"))  # the same request id twice
    posts.append(dict(posts[0], id="servidor-2:100", rid="nobody-1"))  # nobody sent it
    posts.append(dict(posts[0], id="servidor-2:101", rid="c1-3", message="changed"))
    files["publicacoes.json"] = json.dumps(posts)
    chans = json.loads(files["canais.json"])
    chans.append({"channel": "sala-1", "timestamp": 1.0, "clock": 50, "id": "servidor-3:7",
                  "rid": "c1-4"})  # answered erro, yet visible
    files["canais.json"] = json.dumps(chans)
    v = verdict(r, {n: files for n in SERVERS})
    assert kinds(v) == {"applied more than once", "unknown write", "altered write",
                        "refused write visible"}
    assert len(v.violations) == 4 * len(SERVERS)


def test_a_channel_granted_twice_is_a_violation_only_outside_partitions() -> None:
    r = clean_run()
    r.write("c1", "c1-9", "channel", {"channel": "sala-1"}, start=5.0, end=5.1, apply=False)
    v = verdict(r)
    assert kinds(v) == {"channel granted twice"}
    assert v.violations[0].rids == ["c2-2", "c1-9"]
    # The second grant overlapped a partition: allowed (the README says so), noted.
    v = verdict(r, partitions=[(4.0, 6.0)])
    assert v.ok and len(v.notes) == 1


def test_an_acknowledged_post_missing_from_its_writers_history() -> None:
    v = verdict(clean_run(), seen={"c1": {"geral": set()}})
    assert kinds(v) == {"missing from history"}
    assert v.violations[0].rids == ["c1-1"]
