"""Property-based tests (Hypothesis): whatever arrives, the decoder and the validation of
client requests and replicated operations answer with a value or a refusal, never with an
unexpected exception, and never adopt a clock that cannot be real."""

from __future__ import annotations

import json
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bbd import protocol
from bbd.lamport import LamportClock
from bbd.protocol import ProtocolError
from bbd.services.responder import Responder
from bbd.state import Board, Op

# Values as MessagePack and JSON can carry them, with the edges that broke things before.
scalars = st.one_of(
    st.none(), st.booleans(), st.text(max_size=80), st.binary(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([2**53 - 1, 2**53, 2**63 - 1, 2**64 - 200, -1, "servers", "\u0301",
                     "a\u2028b", "x" * 70, " pad", "login", "publish", "message"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=20)
field_names = st.sampled_from(["user", "channel", "message", "src", "dst", "from", "to",
                               "clock", "timestamp", "id", "limit", "before"])
data_maps = st.dictionaries(field_names, values, max_size=8)
services = st.sampled_from(["login", "users", "channel", "channels", "publish", "message",
                            "history", "history_messages", "history_channel", "nope"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_are_refused(frame: bytes) -> None:
    try:
        req = protocol.decode(frame)
    except ProtocolError as e:
        assert e.description and e.fmt in ("msgpack", "json")
        return
    assert isinstance(req.service, str) and isinstance(req.data, dict)


def _frames() -> st.SearchStrategy[bytes]:
    envelope = st.fixed_dictionaries({"service": services, "data": data_maps})
    return st.one_of(
        envelope.map(lambda m: msgpack.packb(m, use_bin_type=True)),
        envelope.map(lambda m: json.dumps(m, default=repr).encode()),
        values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    )


def _validate(req: protocol.Request) -> Any:
    """What the server's handlers check before a write reaches the board."""
    data = protocol.with_aliases(req.data, {"src": "from", "dst": "to"})
    protocol.request_id(data, req.service)
    if req.service == "login":
        return protocol.require_name(data, "user", "login")
    if req.service == "channel":
        return protocol.require_name(data, "channel", "channel")
    if req.service == "publish":
        return (protocol.require_name(data, "user", "publish"),
                protocol.require_name(data, "channel", "publish"),
                protocol.require_text(data, "message", "publish"))
    if req.service == "message":
        return (protocol.require_name(data, "src", "message"),
                protocol.require_name(data, "dst", "message"),
                protocol.require_text(data, "message", "message"))
    if req.service.startswith("history"):
        kind = {"history_channel": "channel", "history_messages": "user"}.get(req.service)
        return protocol.history_query(data, kind, req.service)
    return None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_frames())
def test_every_request_gets_exactly_one_reply_and_no_clock_beyond_the_bound(
        frame: bytes) -> None:
    lamport = LamportClock(5)
    sent: list[bytes] = []
    handlers = {s: _validate for s in ["login", "users", "channel", "channels", "publish",
                                       "message", "history", "history_messages",
                                       "history_channel"]}
    Responder(lamport, lambda: 1.0, _NoLog(), clients=True).handle(
        sent.append, frame, {k: (lambda req: _reply(_validate(req))) for k in handlers})
    assert len(sent) == 1
    assert lamport.value <= 5 + protocol.MAX_CLOCK_LEAP + 1
    reply = json.loads(sent[0]) if sent[0][:1] == b"{" else msgpack.unpackb(sent[0])
    assert isinstance(reply["data"], dict) and isinstance(reply["service"], str)
    if reply["data"].get("status") == "erro":
        assert len(reply["data"]["description"]) < 300


def _reply(_: Any) -> dict:
    return {"status": "OK"}


class _NoLog:
    def info(self, *a: Any, **kw: Any) -> None:
        pass

    def failure(self, *a: Any, **kw: Any) -> None:
        raise AssertionError(f"unexpected failure logged: {a} {kw}")


op_dicts = st.fixed_dictionaries({
    "origin": st.one_of(st.sampled_from(["s1", "servidor-2"]), values),
    "seq": st.one_of(st.integers(min_value=-2, max_value=2**64 - 1), values),
    "clock": st.one_of(st.integers(min_value=-2, max_value=2**64 - 1), values),
    "kind": st.one_of(st.sampled_from(["login", "channel", "publish", "message"]), values),
    "timestamp": st.one_of(st.floats(), values),
    "fields": st.one_of(st.dictionaries(field_names, st.one_of(st.text(max_size=70), values),
                                        max_size=4), values),
}, optional={"rid": st.one_of(st.text(max_size=130), values)})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op_dicts, max_size=6))
def test_replicated_operations_are_taken_or_refused_and_the_board_stays_sound(
        raw: list[dict]) -> None:
    board = Board("s9")
    for d in raw:
        try:
            op = Op.from_dict(d)
        except ValueError:
            continue
        assert 0 <= op.clock <= protocol.MAX_CLOCK and 1 <= op.seq <= protocol.MAX_CLOCK
        board.apply(op)
    files = board.snapshot()
    json.dumps(files, allow_nan=False)  # the data files stay valid JSON
    msgpack.packb([op.to_dict() for op in board.ops.values()])  # and every op encodable
