"""The dashboard's aggregation (bbd.watch) on task.Clock: what it shows, what it keeps."""

from __future__ import annotations

import json

from twisted.internet.task import Clock

from bbd.watch import BoardWatch

LIST = [{"name": "servidor-1", "rank": 1, "sync": "tcp://h:1"},
        {"name": "servidor-2", "rank": 2, "sync": "tcp://h:2"},
        {"name": "servidor-3", "rank": 3, "sync": "tcp://h:3"}]


def status(name: str, **kw) -> dict:
    s = {"name": name, "rank": int(name[-1]), "ready": True, "clock": 10, "offset": 0.0,
         "applied": 0, "vector": {}, "coordinator": None, "election_phase": "idle",
         "berkeley_rounds": 0, "last_adjustment": None, "handled": 0}
    s.update(kw)
    return s


def kinds(w: BoardWatch) -> list[str]:
    return [e["kind"] for e in w.timeline]


def rows(w: BoardWatch) -> dict[str, dict]:
    return {r["name"]: r for r in w.topology()["servers"]}


def test_listed_servers_join_and_show_up_with_rank_and_coordinator() -> None:
    clock = Clock()
    w = BoardWatch(clock.seconds)
    w.reference_list(LIST)
    assert kinds(w) == ["join"] * 3
    for e in LIST:
        w.server_status(e["name"], status(e["name"], coordinator="servidor-3"))
    r = rows(w)
    assert [s["name"] for s in w.topology()["servers"]] == ["servidor-1", "servidor-2",
                                                            "servidor-3"]
    assert {n: s["state"] for n, s in r.items()} == dict.fromkeys(r, "up")
    assert [n for n, s in r.items() if s["coordinator"]] == ["servidor-3"]
    assert r["servidor-2"]["rank"] == 2
    assert w.topology()["reference"] is True


def test_announcement_marks_new_coordinator_and_a_dead_one_goes_down_at_once() -> None:
    clock = Clock()
    w = BoardWatch(clock.seconds)
    w.reference_list(LIST)
    for e in LIST:
        w.server_status(e["name"], status(e["name"]))
    w.publication("servers", {"service": "election", "data": {"coordinator": "servidor-3"}})
    assert w.coordinator == "servidor-3" and w.changed
    w.changed = False
    clock.advance(1)
    w.server_failed("servidor-3", "not connected")
    assert rows(w)["servidor-3"]["state"] == "down"
    assert w.coordinator is None and w.changed
    # Other servers still report the dead one in their status: not taken back.
    w.server_status("servidor-1", status("servidor-1", coordinator="servidor-3"))
    assert w.coordinator is None
    w.publication("servers", {"service": "election", "data": {"coordinator": "servidor-2"}})
    assert [s["name"] for s in w.topology()["servers"] if s["coordinator"]] == ["servidor-2"]
    texts = [e["text"] for e in w.timeline if e["kind"] == "coordinator"]
    assert "coordinator is now servidor-2 (rank 2), announced" in texts[-1]
    assert "down" in kinds(w)


def test_catching_up_state_and_catch_up_event_with_operations_gained() -> None:
    w = BoardWatch(Clock().seconds)
    w.reference_list(LIST[:1])
    w.server_status("servidor-1", status("servidor-1", ready=False, applied=5))
    assert rows(w)["servidor-1"]["state"] == "catching-up"
    w.server_status("servidor-1", status("servidor-1", ready=True, applied=42))
    assert rows(w)["servidor-1"]["state"] == "up"
    assert w.timeline[-1]["kind"] == "catch-up"
    assert "+37 operations" in w.timeline[-1]["text"]


def test_leaving_the_list_and_answering_again_are_events() -> None:
    w = BoardWatch(Clock().seconds)
    w.reference_list(LIST)
    w.server_status("servidor-1", status("servidor-1"))
    w.server_failed("servidor-1", "no answer in time")
    w.reference_list(LIST[1:])
    w.server_status("servidor-1", status("servidor-1"))
    assert kinds(w)[-3:] == ["down", "leave", "up"]
    assert rows(w)["servidor-1"]["listed"] is False


def test_samples_give_rates_lag_and_bounded_series() -> None:
    clock = Clock()
    w = BoardWatch(clock.seconds, history=10)
    w.reference_list(LIST[:2])
    for i in range(40):
        w.server_status("servidor-1", status("servidor-1", applied=10 * i, clock=100 + i,
                                             vector={"servidor-1": 10 * i}, handled=20 * i))
        w.server_status("servidor-2", status("servidor-2", applied=10 * i - 3, offset=0.5,
                                             vector={"servidor-2": 0}))
        w.sample()
        clock.advance(0.5)
    r = rows(w)
    assert r["servidor-1"]["throughput"] == 20.0  # 10 operations per 0.5 s
    assert r["servidor-1"]["requests"] == 40.0
    assert r["servidor-2"]["throughput"] == 0.0
    assert (r["servidor-1"]["lag"], r["servidor-2"]["lag"]) == (0, 3)
    assert all(len(pts) == 10 for by in w.series.values() for pts in by.values())
    assert w.series["offset"]["servidor-2"][-1][1] == 0.5
    assert w.series["lamport"]["servidor-1"][-1][1] == 139


def test_down_servers_get_no_points_and_no_stale_rates() -> None:
    clock = Clock()
    w = BoardWatch(clock.seconds)
    w.reference_list(LIST[:1])
    w.server_status("servidor-1", status("servidor-1"))
    w.sample()
    w.server_failed("servidor-1", "gone")
    clock.advance(0.5)
    added = w.sample()
    assert added["offset"] == {}
    assert rows(w)["servidor-1"]["throughput"] is None


def test_posts_live_and_bounded_private_messages_only_counted() -> None:
    w = BoardWatch(Clock().seconds, posts=3, max_channels=2)
    for i in range(5):
        w.publication("geral", {"service": "publish", "user": "ana", "channel": "geral",
                                "message": f"ola {i}", "clock": i, "id": f"s:{i}"})
    w.publication("bob", {"service": "message", "src": "ana", "dst": "bob",
                          "message": "segredo"})
    events = w.drain()
    assert [n for n, _ in events].count("post") == 5
    assert ("private", {"count": 1}) in events
    snap = w.snapshot()
    assert [p["message"] for p in snap["channels"]["geral"]] == ["ola 2", "ola 3", "ola 4"]
    assert "segredo" not in json.dumps(snap) and "bob" not in json.dumps(snap)
    assert snap["topology"]["private_messages"] == 1
    w.channel_list(["a", "b", "c"])
    assert len(w.channels) == 2


def test_berkeley_rounds_merged_unless_a_big_correction() -> None:
    clock = Clock()
    w = BoardWatch(clock.seconds)
    w.reference_list(LIST[:1])
    w.server_status("servidor-1", status("servidor-1", berkeley_rounds=1))
    for n in range(2, 6):  # four small rounds within 2 s: one line
        clock.advance(0.5)
        w.server_status("servidor-1", status("servidor-1", berkeley_rounds=n,
                                             last_adjustment=0.0001))
    assert kinds(w).count("berkeley") == 1
    clock.advance(0.5)
    w.server_status("servidor-1", status("servidor-1", berkeley_rounds=6,
                                         last_adjustment=-4.3))
    assert kinds(w).count("berkeley") == 2
    assert "-4.3000 s" in w.timeline[-1]["text"]
    clock.advance(6)
    w.server_status("servidor-1", status("servidor-1", berkeley_rounds=9,
                                         last_adjustment=0.0))
    assert "3 rounds" in w.timeline[-1]["text"]


def test_bounded_timeline_and_servers() -> None:
    clock = Clock()
    w = BoardWatch(clock.seconds, timeline=5, max_servers=3)
    for i in range(10):
        clock.advance(1)
        w.reference_list([{"name": f"s{i}", "rank": i, "sync": "x"}])
        w.server_failed(f"s{i}", "gone")
    assert len(w.timeline) == 5
    assert len(w.servers) == 3
    assert set(w.servers) == {"s7", "s8", "s9"}


def test_broker_and_reference_health_and_proxy_silence() -> None:
    clock = Clock()
    w = BoardWatch(clock.seconds, proxy_silence=3)
    assert w.topology()["proxy"] is None
    w.publication("servers", {"service": "election", "data": {"coordinator": "x"}})
    assert w.topology()["proxy"] is True
    clock.advance(4)
    assert w.topology()["proxy"] is False
    w.broker_failed("no answer in time")
    w.reference_failed("no answer in time")
    w.reference_failed("no answer in time")
    assert (w.topology()["broker"], w.topology()["reference"]) == (False, False)
    assert kinds(w).count("reference") == 1


def test_broker_readiness_field_shown_when_present() -> None:
    w = BoardWatch(Clock().seconds)
    w.reference_list(LIST[:2])
    w.server_status("servidor-1", status("servidor-1", broker={"ready": True,
                                                               "in_flight": 3}))
    w.server_status("servidor-2", status("servidor-2"))
    r = rows(w)
    assert r["servidor-1"]["broker"] == {"ready": True, "in_flight": 3}
    assert "broker" not in r["servidor-2"]
