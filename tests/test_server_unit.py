"""BoardServer's edges with fake sockets and task.Clock: the catch-up queue, replication
pages, storage failures, dialect requests and start-up failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest
from twisted.internet import defer, task

from bbd import config, protocol
from bbd.protocol import ProtocolError
from bbd.services.frontend import MAX_QUEUED
from bbd.services.replication import _page
from bbd.services.server import BoardServer, ServerConfig
from bbd.state import Op

TIMING = config.settings().timing.replace(
    heartbeat_interval=0.5, request_timeout=2.0, peer_timeout=1.0, anti_entropy_interval=2.0,
    snapshot_interval=1.0, reload_interval=2.0)


class FakeFrontend:
    def __init__(self) -> None:
        self.replies: list[tuple[list[bytes], dict]] = []

    def reply(self, envelope: list[bytes], body: bytes) -> None:
        self.replies.append((envelope, msgpack.unpackb(body)))

    def request_id(self, envelope: list[bytes]) -> str | None:
        return None  # as if through a round-robin relay: no broker request id


def make_server(tmp_path: Path, **kw: Any) -> tuple[BoardServer, task.Clock, FakeFrontend]:
    cfg = ServerConfig(
        name="servidor-1", data_dir=tmp_path, broker="", publish="", subscribe="",
        reference="", bind="127.0.0.1", host="127.0.0.1", sync_port=1, replication_port=2,
        max_bytes=1024 * 1024, timing=TIMING)
    clock = task.Clock()
    server = BoardServer(cfg, clock=clock, **kw)
    server.clients.socket = FakeFrontend()
    return server, clock, server.clients.socket


def request(service: str, **data: Any) -> bytes:
    return msgpack.packb({"service": service, "data": data})


def test_requests_queued_during_catch_up_are_bounded_and_stale_ones_dropped(
        tmp_path: Path) -> None:
    server, clock, front = make_server(tmp_path)
    server._resumed_from_pause = lambda: False
    server.catchup.begin()  # catching up: requests wait
    for i in range(3):
        server.clients.on_request([b"old%d" % i], request("users"))
    clock.advance(3.0)  # longer than the request timeout: those clients have retried
    server.clients.on_request([b"fresh"], request("channels"))
    for _ in range(MAX_QUEUED - 4):
        server.clients.on_request([b"filler"], request("users"))
    assert front.replies == []
    server.clients.on_request([b"over"], request("users"))  # no room: refused at once
    assert [env for env, _ in front.replies] == [[b"over"]]
    assert front.replies[0][1]["data"]["status"] == "erro"
    assert "catching up" in front.replies[0][1]["data"]["description"]

    server.catchup.finished()  # caught up: serving
    server.clients.serve_queued()
    served = [env[0] for env, _ in front.replies[1:]]
    assert b"old0" not in served and served[0] == b"fresh"
    assert len(served) == MAX_QUEUED - 3


def test_replication_pages_are_sized_in_encoded_bytes() -> None:
    # 60,000 four-byte characters: 240 KB a message, 60,000 "characters" to a count of
    # characters. Four of them in one page would pass a 256 KiB character budget and make
    # a 1 MiB frame, which ZeroMQ drops along with the link.
    ops = [Op("s1", i, i, "publish", 1.0, {"user": "a", "channel": "c",
                                            "message": "\U0001f600" * 60_000})
           for i in range(1, 9)]
    budget = 512 * 1024
    pages, rest = [], ops
    while rest:  # as _send_outbox cuts a batch into replicate messages
        pages.append(_page(rest, budget, rows=True))
        rest = rest[len(pages[-1]):]
    assert sum(len(p) for p in pages) == len(ops) and len(pages) > 1
    for page in pages:
        size = len(protocol.encode({"rows": page}))
        assert size <= budget + 64


def test_a_replicate_round_that_fits_is_encoded_once_to_size_it(monkeypatch) -> None:
    from bbd.services import replication

    encoded: list[int] = []
    real = protocol.encode
    monkeypatch.setattr(replication.protocol, "encode",
                        lambda obj, *a: encoded.append(len(obj)) or real(obj, *a))
    ops = [Op("s1", i, i, "login", 1.0, {"user": f"u{i}"}) for i in range(1, 6)]
    assert _page(ops, 64 * 1024, rows=True) == ops
    assert encoded == [5]


@pytest.mark.parametrize("service,field", [("users", "users"), ("channels", "channels")])
def test_client_replies_carry_their_fields_flat_too(tmp_path: Path, service: str,
                                                    field: str) -> None:
    server, _, front = make_server(tmp_path)
    server.catchup.finished()  # caught up: serving
    server._resumed_from_pause = lambda: False
    server.clients.on_request([b"c"], request(service))
    reply = front.replies[0][1]
    assert reply["data"][field] == [] and reply[field] == [] and reply["success"] is True


def test_a_start_that_fails_is_logged_and_ends_the_process(tmp_path: Path) -> None:
    exits: list[bool] = []
    server, _, _ = make_server(tmp_path, exit=lambda: exits.append(True))
    server._start_failed(_failure(RuntimeError("boom")))
    assert exits == [True]


def _failure(e: Exception) -> Any:
    from twisted.python.failure import Failure

    try:
        raise e
    except Exception:
        return Failure()


@pytest.mark.parametrize("errno", [28, 5])
def test_a_journal_that_cannot_be_written_refuses_the_write_and_applies_nothing(
        tmp_path: Path, errno: int) -> None:
    server, _, front = make_server(tmp_path)
    server.catchup.finished()  # caught up: serving
    server._resumed_from_pause = lambda: False

    def broken(records: list) -> defer.Deferred:
        return defer.fail(OSError(errno, "No space left on device", str(tmp_path)))

    server.committer.submit = broken
    server.clients.on_request([b"c"], request("login", user="ana"))
    reply = front.replies[-1][1]["data"]
    assert reply["status"] == "erro" and "storage unavailable" in reply["description"]
    assert server.board.applied == 0 and server.board.user_list() == []
    assert server.board.next_seq == 1  # the sequence number is given out again
    assert server.storage_error is not None

    server.committer.submit = lambda records: defer.succeed(None)
    server.replication._outbox_call = "no peers"  # nothing to replicate to
    server.replication._replicate = lambda op: defer.succeed(None)
    server.clients.on_request([b"c"], request("login", user="ana"))
    assert front.replies[-1][1]["data"]["status"] == "sucesso"
    assert server.board.user_list() == ["ana"] and server.storage_error is None
    assert next(iter(server.board.ops)) == "servidor-1:1"


def test_private_messages_take_from_and_to(tmp_path: Path) -> None:
    server, _, front = make_server(tmp_path)
    server.catchup.finished()  # caught up: serving
    server._resumed_from_pause = lambda: False
    server.committer.submit = lambda records: defer.succeed(None)
    server.replication._replicate = lambda op: defer.succeed(None)
    published: list[tuple[str, dict]] = []

    class Pub:
        def publish(self, topic: str, payload: bytes) -> bool:
            published.append((topic, msgpack.unpackb(payload)))
            return True

    server.publisher = Pub()
    for user in ("ana", "bia"):
        server.clients.on_request([b"c"], request("login", user=user))
    server.clients.on_request([b"c"], request("message", **{"from": "ana", "to": "bia",
                                                    "message": "oi"}))
    assert front.replies[-1][1]["data"]["status"] == "OK"
    topic, payload = published[-1]
    assert topic == "bia" and payload["src"] == payload["from"] == "ana"
    assert payload["dst"] == payload["to"] == "bia" and payload["user"] == "ana"
    server.clients.on_request([b"c"], request("history_messages", user="bia"))
    items = front.replies[-1][1]["messages"]
    assert [(m["from"], m["to"], m["message"]) for m in items] == [("ana", "bia", "oi")]


def test_restore_replays_the_journal_and_skips_records_that_are_not_operations(
        tmp_path: Path) -> None:
    from twisted.logger import globalLogPublisher

    from bbd.store import Journal

    good = [Op("servidor-2", 1, 5, "login", 1.0, {"user": "ana"}),
            Op("servidor-2", 2, 9, "channel", 2.0, {"channel": "geral"}, "r1"),
            Op("servidor-1", 1, 12, "publish", 3.0,
               {"user": "ana", "channel": "geral", "message": "oi"})]
    journal = Journal(tmp_path)
    journal.open()
    journal.append([good[0].to_dict(), {**good[1].to_dict(), "seq": "2"}, good[1].to_dict()])
    journal.append([{"not": "an operation"}, good[2].to_dict()])
    journal.close()
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        server, _, _ = make_server(tmp_path)
        server._restore()
    finally:
        globalLogPublisher.removeObserver(events.append)
    board = server.board
    assert board.applied == 3 and board.vector == {"servidor-2": 2, "servidor-1": 1}
    assert board.history("channel", "geral", 10, None)[0]["message"] == "oi"
    assert board.by_rid("r1") == good[1] and board.next_seq == 2
    assert server.lamport.value == 12
    errors = [e.get("why") or e.get("n") for e in events if e.get("log_level").name == "error"]
    assert len(errors) == 3 and errors[-1] == 2
    assert all("not an operation" in why for why in errors[:2])


def test_catch_up_asks_for_the_next_page_while_the_last_is_journaled(tmp_path: Path) -> None:
    from types import SimpleNamespace

    server, _, _ = make_server(tmp_path)
    server.running = True
    asked: list[tuple[Any, defer.Deferred]] = []
    commits: list[defer.Deferred] = []

    def ask(client: Any, service_: str, data: dict) -> defer.Deferred:
        asked.append((data["after"], defer.Deferred()))
        return asked[-1][1]

    def submit(records: list) -> defer.Deferred:
        commits.append(defer.Deferred())
        return commits[-1]

    server.ask = ask
    server.committer.submit = submit
    pages = [[Op("servidor-2", s, s, "login", 1.0, {"user": f"u{s}"}).to_dict()
              for s in (2 * k + 1, 2 * k + 2)] for k in range(3)]
    # Listed by the reference:
    server.replication._known_origins = lambda: {"servidor-1", "servidor-2"}
    done = server.replication.pull_from(
        SimpleNamespace(name="servidor-2", repl_client=None, up=True))
    asked[0][1].callback({"ops": pages[0], "more": True})
    # Page 2 is asked for past the cursor before page 1 is durable; one page ahead at most.
    assert [after for after, _ in asked] == [None, ["servidor-2", 2]]
    assert len(commits) == 1 and server.board.applied == 0
    asked[1][1].callback({"ops": pages[1], "more": True})
    assert len(asked) == 2 and len(commits) == 1
    commits[0].callback(None)
    assert server.board.applied == 2 and len(commits) == 2
    assert [after for after, _ in asked][2] == ["servidor-2", 4]
    asked[2][1].callback({"ops": pages[2], "more": False})
    commits[1].callback(None)
    commits[2].callback(None)
    assert len(asked) == 3 and server.board.applied == 6
    assert done.result == 6


def test_catch_up_given_up_leaves_no_unhandled_page(tmp_path: Path) -> None:
    from types import SimpleNamespace

    server, _, _ = make_server(tmp_path)
    server.running = True
    asked: list[defer.Deferred] = []
    server.ask = lambda client, service_, data: asked.append(defer.Deferred()) or asked[-1]
    server.committer.submit = lambda records: defer.fail(OSError(28, "No space left"))
    # Listed by the reference:
    server.replication._known_origins = lambda: {"servidor-1", "servidor-2"}
    done = server.replication.pull_from(
        SimpleNamespace(name="servidor-2", repl_client=None, up=True))
    asked[0].callback({"ops": [Op("servidor-2", 1, 1, "login", 1.0, {"user": "a"}).to_dict()],
                       "more": True})
    failures: list[Any] = []
    done.addErrback(failures.append)
    assert len(failures) == 1 and len(asked) == 2
    asked[1].errback(ConnectionError("peer gone"))
    assert asked[1].result is None  # swallowed: nobody waits for it now


def test_a_competitor_in_an_ack_decides_the_outcome_even_on_a_slow_disk(
        tmp_path: Path) -> None:
    """Found by the nemesis (tests/test_replication.py's twenty creators, under load): the
    origin decided before the competitor an ack carried had reached its board (it was only
    journaled in the background), so two origins each answered sucesso for one name."""
    from bbd.services.replication import Peer

    server, clock, front = make_server(tmp_path)
    server.catchup.finished()  # caught up: serving
    server._resumed_from_pause = lambda: False
    disk: list[defer.Deferred] = []  # journal batches, made durable when the test says

    def slow(records: list) -> defer.Deferred:
        disk.append(defer.Deferred())
        return disk[-1]

    server.committer.submit = slow
    server.board.apply(Op("servidor-2", 1, 1, "login", 1.0, {"user": "ana"}))
    earlier = Op("servidor-2", 2, 2, "channel", 1.0, {"channel": "sala"}, "other-rid")
    server.lamport.observe(10)  # ours comes later in the total order than the competitor
    server.replication.peers["servidor-2"] = Peer("servidor-2", 2, "tcp://x:2", "tcp://x:1")
    server.ask = lambda client, service, data: defer.succeed(
        {"status": "OK", "competitors": [earlier.to_dict()]})
    server.clients.on_request([b"c"], request("channel", channel="sala", id="my-rid"))
    disk.pop(0).callback(None)  # our own operation is durable
    clock.advance(0)  # the outbox leaves: the ack names servidor-2's earlier creation
    assert front.replies == []  # not decided while the competitor is not on our board
    disk.pop(0).callback(None)  # the competitor is durable here too
    reply = front.replies[-1][1]["data"]
    assert reply["status"] == "erro" and "already exists" in reply["description"]
    assert server.board.channel_list() == ["sala"]
    assert server.board.by_rid("other-rid") is not None


def test_a_stopping_server_lets_writes_in_flight_finish_replicating(tmp_path: Path) -> None:
    """Found by the nemesis: SIGTERM closed the links to the peers while a creation was
    being replicated, so it was decided alone and the name granted twice."""
    from bbd.services.replication import Peer

    server, clock, front = make_server(tmp_path)
    server.catchup.finished()  # caught up: serving
    server._resumed_from_pause = lambda: False
    server.committer.submit = lambda records: defer.succeed(None)
    closed: list[str] = []

    class Link:
        def close(self) -> None:
            closed.append("closed")

    peer = Peer("servidor-2", 2, "tcp://x:2", "tcp://x:1", repl_client=Link())
    server.replication.peers["servidor-2"] = peer
    acks: list[defer.Deferred] = []
    server.ask = lambda client, service, data: acks.append(defer.Deferred()) or acks[-1]
    server.clients.on_request([b"c"], request("channel", channel="sala"))
    clock.advance(0)  # the replicate leaves and waits for its ack
    assert len(acks) == 1
    stopped = server._stop()
    clock.advance(0.5)
    assert closed == [] and not stopped.called  # the link stays while the write is open
    acks[0].callback({"status": "OK", "competitors": []})
    clock.advance(0.05)
    assert closed == ["closed"] and stopped.called
    assert front.replies[-1][1]["data"]["status"] == "sucesso"


def _replicate(server: BoardServer, ops: list[Op]) -> defer.Deferred:
    from bbd.protocol import Request

    return defer.maybeDeferred(server.replication._replicate_in, Request(
        "replicate", {"ops": [op.to_dict() for op in ops]}, "msgpack"))


def _login(origin: str, seq: int) -> Op:
    return Op(origin, seq, seq, "login", 1.0, {"user": f"u{seq}"})


def test_a_replicate_behind_one_still_being_journaled_is_taken(tmp_path: Path) -> None:
    # The origin sends its next batch without waiting: the first is still on its way to our
    # journal, so its operations count as held, not as a gap.
    server, _, _ = make_server(tmp_path)
    server.replication._known_origins = lambda: {"servidor-1", "servidor-2"}
    commits: list[defer.Deferred] = []
    server.committer.submit = lambda records: commits.append(defer.Deferred()) or commits[-1]
    first = _replicate(server, [_login("servidor-2", 1)])
    second = _replicate(server, [_login("servidor-2", 2)])
    assert len(commits) == 2 and not first.called and not second.called
    for d in commits:
        d.callback(None)
    assert first.result["status"] == second.result["status"] == "OK"
    assert server.board.vector["servidor-2"] == 2


def _replicate_rows(server: BoardServer, rows: list) -> defer.Deferred:
    """A replicate as an origin sends it now: rows, through msgpack and back."""
    return defer.maybeDeferred(server.replication._replicate_in, protocol.decode(
        protocol.encode({"service": "replicate", "data": {"rows": rows}})))


def test_a_replicate_of_rows_lands_the_operations_a_replicate_of_maps_lands(
        tmp_path: Path) -> None:
    ops = [Op("servidor-2", 1, 3, "login", 1.5, {"user": "ana"}, "r1"),
           Op("servidor-2", 2, 4, "publish", 2.0,
              {"user": "ana", "channel": "geral", "message": "oi"}, "r2")]
    held = []
    for form, tmp in (("rows", tmp_path / "rows"), ("maps", tmp_path / "maps")):
        server, _, _ = make_server(tmp)
        server.replication._known_origins = lambda: {"servidor-1", "servidor-2"}
        server.committer.submit = lambda records: defer.succeed(None)
        reply = (_replicate_rows(server, ops) if form == "rows" else _replicate(server, ops)).result
        assert reply["status"] == "OK"
        held.append([server.board.get("servidor-2", seq) for seq in (1, 2)])
    assert held[0] == held[1] == ops


def test_a_malformed_row_is_refused_as_from_dict_refuses_it(tmp_path: Path) -> None:
    server, _, _ = make_server(tmp_path)
    server.replication._known_origins = lambda: {"servidor-1", "servidor-2"}
    server.committer.submit = lambda records: defer.succeed(None)
    bad = [1, "servidor-2", 1, "login", 1.0, None, "", None, None]  # an empty user name
    failure = _replicate_rows(server, [bad])
    failure.addErrback(lambda f: f.value)
    assert isinstance(failure.result, ProtocolError)
    assert "malformed operation" in failure.result.description
    assert server.board.get("servidor-2", 1) is None


def test_a_gap_is_refused_with_where_our_copy_stops(tmp_path: Path) -> None:
    server, _, _ = make_server(tmp_path)
    server.replication._known_origins = lambda: {"servidor-1", "servidor-2"}
    server.committer.submit = lambda records: defer.succeed(None)
    _replicate(server, [_login("servidor-2", 1)])
    reply = _replicate(server, [_login("servidor-2", 4)]).result
    assert reply["status"] == "erro" and reply["have"] == 1
    assert server.board.vector["servidor-2"] == 1  # nothing of the refused batch taken


def test_an_operation_arriving_twice_while_journaled_is_written_once(tmp_path: Path) -> None:
    # A gap fill and a pull page can carry the same operation: the second waits for the
    # first's batch instead of journaling it again.
    server, _, _ = make_server(tmp_path)
    server.replication._known_origins = lambda: {"servidor-1", "servidor-2"}
    written: list[list] = []
    commits: list[defer.Deferred] = []

    def submit(records: list) -> defer.Deferred:
        written.append(records)
        commits.append(defer.Deferred())
        return commits[-1]

    server.committer.submit = submit
    ops = [_login("servidor-2", 1), _login("servidor-2", 2)]
    first = _replicate(server, ops)
    n, again = server.replication._take([ops[1], _login("servidor-2", 3)])
    assert n == 1 and [r.seq for r in written[1]] == [3]  # only the new one written
    commits[1].callback(None)
    assert not again.called  # op 2 is not durable yet
    commits[0].callback(None)
    assert again.called and first.result["status"] == "OK"
    assert server.board.vector["servidor-2"] == 3


def test_a_batch_that_failed_fails_who_waited_for_it(tmp_path: Path) -> None:
    server, _, _ = make_server(tmp_path)
    server.replication._known_origins = lambda: {"servidor-1", "servidor-2"}
    commits: list[defer.Deferred] = []
    server.committer.submit = lambda records: commits.append(defer.Deferred()) or commits[-1]
    first = _replicate(server, [_login("servidor-2", 1)])
    _, again = server.replication._take([_login("servidor-2", 1)])
    commits[0].errback(OSError(28, "No space left on device"))
    failures: list = []
    for d in (first, again):
        d.addErrback(failures.append)
    assert len(failures) == 2  # the responder answers the origin erro
    assert all("storage unavailable" in f.getErrorMessage() for f in failures)
    assert "servidor-2" not in server.board.vector


def test_stop_sends_a_waiting_outbox_at_once_and_fires_its_writes(tmp_path: Path) -> None:
    """The outbox's timer is not left behind at stop: the waiting batch is sent now, and
    the write waiting for it is answered after that send."""
    from bbd.services.replication import Peer

    server, clock, front = make_server(tmp_path)
    server.catchup.finished()
    server._resumed_from_pause = lambda: False
    server.committer.submit = lambda records: defer.succeed(None)
    server.replication.peers["servidor-2"] = Peer("servidor-2", 2, "tcp://x:2", "tcp://x:1")
    sent: list[dict] = []
    server.ask = lambda client, service, data: sent.append(data) or defer.succeed(
        {"status": "OK", "competitors": []})
    server.clients.on_request([b"c"], request("channel", channel="sala"))
    assert sent == [] and server.replication._outbox_call is not None  # waiting for its turn
    done = server.replication.outbox_sent()
    assert done.called
    assert len(sent) == 1
    assert not any(c.func == server.replication._outbox_due for c in clock.getDelayedCalls())
    assert front.replies[-1][1]["data"]["status"] == "sucesso"



def test_one_replicate_round_is_out_at_a_time_and_the_next_takes_all_that_waited(
        tmp_path: Path) -> None:
    """Writes made durable while a round is out leave together in the next one, once it
    ends; each is answered after the round that carried it."""
    from bbd.services.replication import Peer

    server, clock, front = make_server(tmp_path)
    server.catchup.finished()
    server._resumed_from_pause = lambda: False
    server.committer.submit = lambda records: defer.succeed(None)
    server.replication.peers["servidor-2"] = Peer("servidor-2", 2, "tcp://x:2", "tcp://x:1")
    rounds: list[tuple[list[str], defer.Deferred]] = []

    def ask(client: Any, service: str, data: dict) -> defer.Deferred:
        # Rows on the wire: a login's first field is its user.
        rounds.append(([row[6] for row in data["rows"]], defer.Deferred()))
        return rounds[-1][1]

    server.ask = ask
    server.clients.on_request([b"a"], request("login", user="ana"))
    clock.advance(0)
    assert [users for users, _ in rounds] == [["ana"]]
    for user in ("bia", "caio"):  # durable while the first round is out
        server.clients.on_request([user.encode()], request("login", user=user))
        clock.advance(0)
    assert len(rounds) == 1 and front.replies == []
    rounds[0][1].callback({"status": "OK", "competitors": []})
    assert [env for env, _ in front.replies] == [[b"a"]]
    clock.advance(0)
    assert [users for users, _ in rounds] == [["ana"], ["bia", "caio"]]
    rounds[1][1].callback({"status": "OK", "competitors": []})
    assert [env for env, _ in front.replies] == [[b"a"], [b"bia"], [b"caio"]]
    assert all(r["data"]["status"] == "sucesso" for _, r in front.replies)


def test_a_journal_batch_leaves_for_the_peers_as_soon_as_it_is_durable(
        tmp_path: Path) -> None:
    """The end-of-turn write that makes a batch durable sends its round too: no further
    reactor turn between a write's fsync and its replicate."""
    from bbd.services.replication import Peer

    server, clock, _ = make_server(tmp_path)
    server.catchup.finished()
    server._resumed_from_pause = lambda: False
    written: list[list] = []
    server.committer._write = written.append
    server.replication.peers["servidor-2"] = Peer("servidor-2", 2, "tcp://x:2", "tcp://x:1")
    rounds: list[list[str]] = []
    server.ask = lambda client, service, data: rounds.append(
        [row[6] for row in data["rows"]]) or defer.Deferred()
    for user in ("ana", "bia"):
        server.clients.on_request([user.encode()], request("login", user=user))
    [commit] = clock.getDelayedCalls()  # the end of this turn: one write for both
    commit.func(*commit.args, **commit.kw)
    assert len(written) == 1 and rounds == [["ana", "bia"]]
    # ... and did not wait for another turn (the commit, called by hand, is still listed).
    assert [c for c in clock.getDelayedCalls() if c is not commit] == []


# -- pull pages: served as large as the puller takes, taken in bulk ------------------------

def _pull_in(server: BoardServer, **data: Any) -> dict:
    from bbd.protocol import Request

    server.replication._known_origins = lambda: {"servidor-1", "servidor-2"}
    server.replication.peers["servidor-2"] = _peer("servidor-2")
    d = defer.maybeDeferred(server.replication._pull_in, Request(
        "pull", {"vector": {}, "from": {"name": "servidor-2"}, **data}, "msgpack"))
    return d.result


def _peer(name: str) -> Any:
    from bbd.services.replication import Peer

    return Peer(name, 2, "tcp://127.0.0.1:1", "")


def _posts(origin: str, n: int, text: str = "x" * 60) -> list[Op]:
    return [Op(origin, s, s, "publish", 1.0, {"user": "ana", "channel": "geral",
                                               "message": f"{s} {text}"}) for s in range(1, n + 1)]


@pytest.mark.parametrize("budget", [None, 300_000, 900_000, 5_000_000, 10])
def test_a_pull_page_fills_the_budget_the_puller_gives(tmp_path: Path,
                                                        budget: int | None) -> None:
    server, _, _ = make_server(tmp_path)
    server.board.load(_posts("servidor-1", 12_000))
    reply = _pull_in(server, **({} if budget is None else {"budget": budget}))
    page = reply["ops"]
    # No budget (an older puller): half its frame, as before; more than it can take is
    # never sent (its frame limit less the envelope's room); a nonsense one is ignored.
    limit = {None: 512 * 1024, 300_000: 300_000, 900_000: 900_000,
             5_000_000: 1024 * 1024 - (64 << 10), 10: 512 * 1024}[budget]
    size = len(protocol.encode(page))
    assert size <= limit and size > 0.9 * limit  # full, and no more
    assert reply["more"] is True and [op["seq"] for op in page] == list(range(1, len(page) + 1))
    assert all(Op.from_dict(d) == server.board.get("servidor-1", d["seq"]) for d in page)


def test_a_pull_page_holds_one_operation_at_least_and_says_when_none_remain(
        tmp_path: Path) -> None:
    server, _, _ = make_server(tmp_path)
    server.board.load(_posts("servidor-1", 3, text="y" * 3000))
    reply = _pull_in(server, budget=2048)
    assert len(reply["ops"]) == 1 and reply["more"] is True
    reply = _pull_in(server, after=["servidor-1", 1])
    assert [op["seq"] for op in reply["ops"]] == [2, 3] and reply["more"] is False


def test_a_pull_page_is_taken_as_take_admissible_takes_it(tmp_path: Path) -> None:
    """Refused: an unknown origin, an operation differing from the one held under its id;
    skipped: one held already; the rest journaled as they are (rows), once, then applied."""
    from types import SimpleNamespace

    server, _, _ = make_server(tmp_path)
    server.running = True
    held = _login("servidor-2", 1)
    server.board.apply(held)
    server.replication._known_origins = lambda: {"servidor-1", "servidor-2"}
    page = [held, Op("servidor-2", 2, 40, "login", 1.0, {"user": "bia"}),
            Op("intruso", 1, 10**6, "login", 1.0, {"user": "eva"}),
            Op("servidor-2", 1, 1, "login", 1.0, {"user": "other"}),  # not what we hold
            Op("servidor-2", 3, 41, "channel", 1.0, {"channel": "geral"}, "r1")]
    written: list[list] = []
    server.committer.submit = lambda records: written.append(records) or defer.succeed(None)
    server.ask = lambda client, service_, data: defer.succeed(
        {"ops": [op.to_dict() for op in page], "more": False})
    done = server.replication.pull_from(
        SimpleNamespace(name="servidor-2", repl_client=None, up=True))
    assert done.result == 2
    assert written == [[page[1], page[4]]] and all(type(r) is Op for r in written[0])
    assert server.board.vector == {"servidor-2": 3} and server.board.by_rid("r1") == page[4]
    assert server.lamport.value == 41  # the intruder's clock was not believed


def test_a_pull_page_waits_for_operations_already_on_their_way(tmp_path: Path) -> None:
    # A replicate being journaled holds servidor-2:1; the page that also carries it writes
    # only the others, and is done once both batches are.
    from types import SimpleNamespace

    server, _, _ = make_server(tmp_path)
    server.running = True
    server.replication._known_origins = lambda: {"servidor-1", "servidor-2"}
    commits: list[tuple[list, defer.Deferred]] = []

    def submit(records: list) -> defer.Deferred:
        commits.append((records, defer.Deferred()))
        return commits[-1][1]

    server.committer.submit = submit
    first = _replicate(server, [_login("servidor-2", 1)])
    ops = [_login("servidor-2", 1), _login("servidor-2", 2)]
    server.ask = lambda client, service_, data: defer.succeed(
        {"ops": [op.to_dict() for op in ops], "more": False})
    done = server.replication.pull_from(
        SimpleNamespace(name="servidor-2", repl_client=None, up=True))
    assert [r.seq if isinstance(r, Op) else r["seq"] for r in commits[1][0]] == [2]
    commits[1][1].callback(None)
    assert not done.called  # servidor-2:1 is not durable yet
    commits[0][1].callback(None)
    assert done.result == 1 and first.result["status"] == "OK"
    assert server.board.vector == {"servidor-2": 2}


def test_a_catch_up_holds_the_collector_off_and_freezes_what_it_took(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from bbd.services import replication

    server, _, _ = make_server(tmp_path)
    server.running = True
    server.replication._known_origins = lambda: {"servidor-1", "servidor-2"}
    server.replication.peers["servidor-2"] = _peer("servidor-2")
    server.registration.heartbeat = lambda: defer.succeed(None)
    server.committer.submit = lambda records: defer.succeed(None)
    during: list[bool] = []
    ops = _posts("servidor-2", 50)

    def ask(client: Any, service_: str, data: dict) -> defer.Deferred:
        during.append(gc.isenabled())
        return defer.succeed({"ops": [op.to_dict() for op in ops], "more": False})

    server.ask = ask
    froze: list[bool] = []
    monkeypatch.setattr(gc, "freeze", lambda: froze.append(gc.isenabled()))
    monkeypatch.setattr(replication, "FREEZE_AFTER", 50)
    assert gc.isenabled()
    server.replication.catch_up("start")
    assert during == [False] and froze == [False] and gc.isenabled()
    assert server.board.applied == 50 and server.ready


@pytest.mark.parametrize("spoilt", [False, True])
def test_restore_upgrades_a_journal_of_maps_to_rows_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spoilt: bool) -> None:
    from bbd.services import server as server_module
    from bbd.store import JOURNAL, Journal

    monkeypatch.setattr(server_module, "_UPGRADE_AT", 3)
    ops = [_login("servidor-2", 1), *_posts("servidor-1", 6)]
    journal = Journal(tmp_path)
    journal.open()
    journal.append([op.to_dict() for op in ops])  # the earlier form
    if spoilt:
        journal.append([{"not": "an operation"}])
    journal.close()
    before = (tmp_path / JOURNAL).read_bytes()
    first, _, _ = make_server(tmp_path)
    first._restore()
    after = (tmp_path / JOURNAL).read_bytes()
    if spoilt:  # something refused: left as it is, for a person to look at
        assert after == before
    else:
        assert after.count(b"|[") == len(ops) and b" {" not in after
        assert Journal(tmp_path).load().maps == 0
    again, _, _ = make_server(tmp_path)
    again._restore()
    assert (tmp_path / JOURNAL).read_bytes() == after  # once
    for board in (first.board, again.board):
        assert board.snapshot() == _board_of(ops).snapshot() and board.next_seq == 7


def _board_of(ops: list[Op]) -> Any:
    from bbd.state import Board

    board = Board("servidor-1")
    for op in ops:
        board.apply(op)
    return board


def test_a_puller_that_reads_rows_gets_rows_and_takes_them(tmp_path: Path) -> None:
    from types import SimpleNamespace

    server, _, _ = make_server(tmp_path)
    server.board.load(_posts("servidor-1", 12_000))
    reply = _pull_in(server, budget=600_000, form="rows")
    rows = reply["rows"]
    size = len(protocol.encode(rows))
    assert "ops" not in reply and reply["more"] is True and 0.9 * 600_000 < size <= 600_000
    assert rows == [server.board.get("servidor-1", s) for s in range(1, len(rows) + 1)]
    # The puller's side: it asks for rows, and takes a page of them as it takes maps.
    puller, _, _ = make_server(tmp_path / "puller")
    puller.running = True
    puller.replication._known_origins = lambda: {"servidor-1", "servidor-2"}
    puller.committer.submit = lambda records: defer.succeed(None)
    wire = msgpack.unpackb(msgpack.packb(rows))
    asked: list[dict] = []
    puller.ask = lambda client, service_, data: asked.append(data) or defer.succeed(
        {"rows": wire, "more": False})
    done = puller.replication.pull_from(
        SimpleNamespace(name="servidor-2", repl_client=None, up=True))
    assert done.result == len(rows) and asked[0]["form"] == "rows"
    assert puller.board.vector == {"servidor-1": len(rows)}
