"""The readiness broker's pure core: routing, credit, liveness, re-sends, exactly one reply."""

from __future__ import annotations

from bbd import loadbalance as lb
from bbd.loadbalance import Balancer, Settings

BUSY, BYE, HEARTBEAT, PROTOCOL = lb.BUSY, lb.BYE, lb.HEARTBEAT, lb.PROTOCOL
READY, REPLY, REQUEST = lb.READY, lb.REPLY, lb.REQUEST

CLIENT = [b"client-a", b""]


def balancer(**kw: float) -> Balancer:
    return Balancer(Settings(**kw), boot="test")


def ready(b: Balancer, wid: bytes, now: float, credit: int = 4, name: str | None = None,
          kind: bytes = READY) -> None:
    b.worker_message(wid, [PROTOCOL, kind, b"%d" % credit, (name or wid.decode()).encode()],
                     now)


def joined(b: Balancer, *wids: bytes, credit: int = 4, now: float = 0.0) -> float:
    """Workers that have said READY and passed the warm-up; returns the time after it."""
    for wid in wids:
        ready(b, wid, now, credit)
    now += b.s.warmup
    for wid in wids:
        ready(b, wid, now, credit)  # their heartbeat
    b.tick(now)
    take(b)
    return now


def take(b: Balancer) -> tuple[list[list[bytes]], list[list[bytes]]]:
    back, front = b.to_back, b.to_front
    b.to_back, b.to_front = [], []
    return [f for f in back if f[2] == REQUEST], front


def test_request_goes_to_a_ready_worker_and_its_reply_to_the_client() -> None:
    b = balancer()
    now = joined(b, b"w1")
    b.client_request(CLIENT, b"body", now)
    (sent,), _ = take(b)
    wid, proto, kind, rid, body = sent
    assert (wid, proto, kind, body) == (b"w1", PROTOCOL, REQUEST, b"body")
    assert rid.startswith(b"bk-test-")
    b.worker_message(b"w1", [PROTOCOL, REPLY, rid, b"answer"], now)
    assert take(b) == ([], [[*CLIENT, b"answer"]])
    b.worker_message(b"w1", [PROTOCOL, REPLY, rid, b"again"], now)
    assert take(b) == ([], [])
    assert b.stats["late_dropped"] == 1


def test_request_ids_are_unique_and_carry_the_boot_prefix() -> None:
    b = balancer()
    now = joined(b, b"w1", credit=10)
    for _ in range(5):
        b.client_request(CLIENT, b"x", now)
    rids = [f[3] for f in take(b)[0]]
    assert len(set(rids)) == 5
    assert all(r.startswith(b"bk-test-") for r in rids)
    assert Balancer().prefix != Balancer().prefix  # a restarted broker never reuses ids


def test_requests_wait_until_a_worker_is_ready() -> None:
    b = balancer()
    b.client_request(CLIENT, b"early", 0.0)
    assert take(b) == ([], [])
    ready(b, b"w1", 0.0)
    b.tick(0.1)
    assert take(b)[0] == []  # still warming up
    b.tick(b.s.warmup)
    (sent,), _ = take(b)
    assert sent[0] == b"w1" and sent[4] == b"early"


def test_busy_worker_gets_nothing_and_credit_bounds_in_flight() -> None:
    b = balancer()
    now = joined(b, b"w1", credit=1)
    ready(b, b"w2", now, kind=BUSY)
    b.client_request(CLIENT, b"one", now)
    b.client_request(CLIENT, b"two", now)
    (first,), _ = take(b)
    assert first[0] == b"w1"
    assert b.status(now)["waiting"] == 1
    b.worker_message(b"w1", [PROTOCOL, REPLY, first[3], b"ok"], now)
    (second,), front = take(b)
    assert front == [[*CLIENT, b"ok"]]
    assert second[0] == b"w1" and second[4] == b"two"


def test_least_loaded_worker_is_chosen() -> None:
    b = balancer()
    now = joined(b, b"w1", b"w2", b"w3", credit=10)
    for _ in range(6):
        b.client_request(CLIENT, b"x", now)
    sent, _ = take(b)
    assert sorted(f[0] for f in sent) == [b"w1", b"w1", b"w2", b"w2", b"w3", b"w3"]
    # w1 answers everything: the next requests go to it, the others still hold two each.
    for f in sent:
        if f[0] == b"w1":
            b.worker_message(b"w1", [PROTOCOL, REPLY, f[3], b"ok"], now)
    take(b)
    b.client_request(CLIENT, b"y", now)
    b.client_request(CLIENT, b"z", now)
    assert [f[0] for f in take(b)[0]] == [b"w1", b"w1"]


def test_silent_worker_stops_getting_work_and_its_requests_go_elsewhere_once() -> None:
    b = balancer(liveness=1.0, resend_after=5.0)  # only silence re-sends here
    now = joined(b, b"w1", b"w2", credit=1)
    b.client_request(CLIENT, b"a", now)
    b.client_request(CLIENT, b"b", now)
    sent, _ = take(b)
    on = {f[0]: f for f in sent}
    # w2 answers and keeps heartbeating; w1 falls silent (SIGSTOP).
    b.worker_message(b"w2", [PROTOCOL, REPLY, on[b"w2"][3], b"from w2"], now)
    take(b)
    for t in (0.5, 1.0, 1.05):
        ready(b, b"w2", now + t, credit=1)
        b.tick(now + t)
    resent, _ = take(b)
    assert [(f[0], f[3], f[4]) for f in resent] == [(b"w2", on[b"w1"][3], on[b"w1"][4])]
    assert any("stopped routing to {name}" in e[1] and e[2]["name"] == "w1"
               for e in b.events)
    # New requests avoid w1 while it is silent.
    b.client_request(CLIENT, b"c", now + 1.05)
    assert take(b)[0] == []  # w2 is full (credit 1), w1 is not routed: it waits
    b.worker_message(b"w2", [PROTOCOL, REPLY, on[b"w1"][3], b"from w2"], now + 1.1)
    (c,), front = take(b)
    assert front == [[*CLIENT, b"from w2"]] and c[0] == b"w2"
    # w1 resumes and answers its stale copy: dropped, the client already has its reply.
    b.worker_message(b"w1", [PROTOCOL, REPLY, on[b"w1"][3], b"from w1"], now + 1.2)
    assert take(b) == ([], [])
    assert b.stats["late_dropped"] == 1 and b.stats["resent"] == 1


def test_unanswered_request_is_resent_once_after_the_deadline_while_its_worker_lives() -> None:
    b = balancer(resend_after=0.6, liveness=1.0)
    now = joined(b, b"w1", b"w2")
    b.client_request(CLIENT, b"slow", now)
    (first,), _ = take(b)
    other = b"w2" if first[0] == b"w1" else b"w1"
    t = now
    while t < now + 3:  # both keep heartbeating; nobody answers
        t += 0.05
        ready(b, b"w1", t)
        ready(b, b"w2", t)
        b.tick(t)
    resent, _ = take(b)
    assert [(f[0], f[3]) for f in resent] == [(other, first[3])]
    b.worker_message(first[0], [PROTOCOL, REPLY, first[3], b"late but first"], t)
    b.worker_message(other, [PROTOCOL, REPLY, first[3], b"second"], t)
    assert take(b)[1] == [[*CLIENT, b"late but first"]]


def test_worker_heard_again_after_silence_waits_out_the_warm_up() -> None:
    b = balancer(liveness=1.0, warmup=0.3)
    now = joined(b, b"w1")
    b.tick(now + 1.5)  # silent
    assert not b.workers[b"w1"].routing
    ready(b, b"w1", now + 10)  # SIGCONT: its first heartbeat
    b.client_request(CLIENT, b"x", now + 10)
    assert take(b)[0] == []
    ready(b, b"w1", now + 10.1, kind=BUSY)  # it noticed the pause: catching up
    b.tick(now + 10.4)
    assert take(b)[0] == []
    ready(b, b"w1", now + 10.5)  # caught up
    b.tick(now + 10.5)
    (sent,), _ = take(b)
    assert sent[0] == b"w1"


def test_bye_and_restart_under_a_new_identity_move_requests_at_once() -> None:
    b = balancer(resend_after=5.0)
    now = joined(b, b"w1", b"w2", credit=1)
    b.client_request(CLIENT, b"a", now)
    b.client_request(CLIENT, b"b", now)
    on = {f[0]: f for f in take(b)[0]}
    b.worker_message(b"w2", [PROTOCOL, BYE], now)
    ready(b, b"w1-restarted", now, credit=4, name="w1")  # w1 restarted: a new connection
    assert set(b.workers) == {b"w1-restarted"}
    b.tick(now + b.s.warmup)
    resent, _ = take(b)
    assert sorted(f[3] for f in resent) == sorted([on[b"w1"][3], on[b"w2"][3]])
    assert all(f[0] == b"w1-restarted" for f in resent)


def test_heartbeats_tell_each_worker_whether_it_is_routed_and_what_it_holds() -> None:
    b = balancer(heartbeat=0.25)
    now = joined(b, b"w1")
    b.client_request(CLIENT, b"x", now)
    take(b)
    b.tick(now + 0.3)
    beats = [f for f in b.to_back if f[2] == HEARTBEAT]
    assert beats == [[b"w1", PROTOCOL, HEARTBEAT, b"1", b"1"]]


def test_old_requests_are_given_up_and_foreign_frames_ignored() -> None:
    b = balancer(give_up=6.0)
    b.client_request(CLIENT, b"nobody serves", 0.0)
    b.worker_message(b"rep", [b"\x00\x01", b"", b"hello"], 0.0)  # not our protocol
    assert b.workers == {}
    b.tick(6.1)
    assert b.status(6.1)["pending"] == 0 and b.stats["dropped"] == 1


def test_undeliverable_request_is_routed_elsewhere() -> None:
    b = balancer(resend_after=5.0)
    now = joined(b, b"w1", b"w2")
    b.client_request(CLIENT, b"x", now)
    (sent,), _ = take(b)
    b.undeliverable(sent, now)
    assert not b.workers[sent[0]].routing
    b.tick(now + 0.01)
    (again,), _ = take(b)
    assert again[0] != sent[0] and again[3] == sent[3]


def test_status_shows_each_worker() -> None:
    b = balancer()
    now = joined(b, b"w1", credit=8)
    b.client_request(CLIENT, b"x", now)
    w, = b.status(now)["workers"]
    assert (w["name"], w["ready"], w["routing"], w["in_flight"], w["credit"]) == \
        ("w1", True, True, 1, 8)
