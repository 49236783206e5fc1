"""bbd.protocol: envelope decoding, aliases, JSON fallback and input validation."""

from __future__ import annotations

import json

import msgpack
import pytest

from bbd import protocol
from bbd.protocol import ProtocolError, decode, encode


def pack(obj, bin_type: bool = True) -> bytes:
    return msgpack.packb(obj, use_bin_type=bin_type)


# -- decode: frames that cannot be served ----------------------------------------------

BAD_FRAMES = {
    "empty frame": (b"", "empty"),
    "garbage byte": (b"\xc1", "not valid MessagePack"),
    "truncated map": (pack({"service": "login", "data": {"user": "ana"}})[:-3],
                      "not valid MessagePack"),
    "blank bytes": (b"   ", "not valid MessagePack"),
    "brace but not json": (b"{not json at all", "not valid JSON"),
    "deep json": (b"[" * 5000 + b"]" * 5000, "not valid MessagePack"),
    "deep json map": (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nested too deeply"),
    "deep msgpack": (b"\x91" * 5000 + b"\x01", "not valid MessagePack"),
    "list frame": (pack(["login", {"user": "ana"}]), "got a list"),
    "int frame": (pack(42), "got an integer"),
    "string frame": (pack("login"), "got a string"),
    "nil frame": (pack(None), "got nil"),
    "missing service": (pack({"data": {"user": "ana"}}), "missing field 'service'"),
    "int service": (pack({"service": 7, "data": {}}), "'service' must be a string"),
    "bytes service": (pack({"service": b"login", "data": {}}), "'service' must be a string"),
    "list data": (pack({"service": "login", "data": ["ana"]}), "'data' must be a map"),
    "string data": (pack({"service": "login", "data": "ana"}), "'data' must be a map"),
    "int key in data": (pack({"service": "login", "data": {1: "ana"}}), "key"),
    "bytes key in data": (pack({"service": "login", "data": {b"user": "ana"}}), "key"),
    "invalid utf-8 str": (pack({"service": "login", "data": {"user": b"\xff\xfe"}},
                               bin_type=False), "UTF-8"),
    "json array": (b'["login"]', "not valid MessagePack"),
    "json service int": (b'{"service": 1, "data": {}}', "'service' must be a string"),
}


@pytest.mark.parametrize("frame,words", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_bad_frame_is_a_readable_protocol_error(frame: bytes, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(frame)
    assert words in info.value.description
    assert str(info.value) == info.value.description


def test_error_after_service_is_known_echoes_it() -> None:
    with pytest.raises(ProtocolError) as info:
        decode(pack({"service": "publish", "data": [1]}))
    assert info.value.service == "publish"
    with pytest.raises(ProtocolError) as info:
        decode(b"\xc1")
    assert info.value.service == "error"


# -- decode: accepted frames -----------------------------------------------------------

@pytest.mark.parametrize("obj", [
    {"service": "login", "data": {"user": "ana"}},
    {"opcao": "login", "dados": {"user": "ana"}},
    {"opcao": "login", "data": {"user": "ana"}},
    {"service": "login", "dados": {"user": "ana"}},
], ids=["canonical", "both aliases", "opcao", "dados"])
def test_aliases(obj: dict) -> None:
    req = decode(pack(obj))
    assert (req.service, req.data, req.fmt) == ("login", {"user": "ana"}, "msgpack")


@pytest.mark.parametrize("obj", [{"service": "users"}, {"service": "users", "data": None}])
def test_missing_or_nil_data_is_an_empty_map(obj: dict) -> None:
    assert decode(pack(obj)).data == {}


@pytest.mark.parametrize("frame", [
    b'{"service": "login", "data": {"user": "ana"}}',
    b'  \n{"opcao": "login", "dados": {"user": "ana"}}',
    b'{"service":"login","data":{"user":"ana"}}\n',
])
def test_json_fallback(frame: bytes) -> None:
    req = decode(frame)
    assert (req.service, req.data, req.fmt) == ("login", {"user": "ana"}, "json")


def test_json_reply_is_json_and_msgpack_reply_is_msgpack() -> None:
    msg = protocol.message("login", {"status": "sucesso"}, clock=3, timestamp=1.5)
    assert json.loads(encode(msg, "json")) == msg
    assert msgpack.unpackb(encode(msg)) == msg
    assert encode({"x": "é"}, "json").decode("utf-8") == '{"x": "é"}'


@pytest.mark.parametrize("ts", [1700000000.25, 1700000000250, "2024-01-01T00:00:00Z", None,
                                 [1], {"a": 1}, True])
def test_timestamp_of_any_type_is_accepted(ts) -> None:
    req = decode(pack({"service": "login", "data": {"user": "ana", "timestamp": ts}}))
    assert req.data["timestamp"] == ts
    assert protocol.require_name(req.data, "user", "login") == "ana"


@pytest.mark.parametrize("data,expected", [
    ({"clock": 7}, 7), ({}, 0), ({"clock": None}, 0), ({"clock": "7"}, 0),
    ({"clock": 7.5}, 0), ({"clock": True}, 0), ({"clock": [1]}, 0),
    ({"clock": 2**53 - 1}, 2**53 - 1),
])
def test_received_clock(data: dict, expected: int) -> None:
    assert protocol.received_clock(data) == expected


@pytest.mark.parametrize("clock", [-1, -3, 2**53, 2**63 - 1, 2**64 - 200])
def test_a_clock_that_cannot_be_real_is_refused(clock: int) -> None:
    with pytest.raises(ProtocolError, match="Lamport clock from 0 to 9007199254740991") as e:
        protocol.received_clock({"clock": clock}, "login")
    assert e.value.service == "login"


def test_a_client_clock_far_ahead_of_the_board_is_refused() -> None:
    leap = protocol.MAX_CLOCK_LEAP
    assert protocol.received_clock({"clock": 100 + leap}, "login", ahead_of=100) == 100 + leap
    with pytest.raises(ProtocolError, match="far ahead of the board"):
        protocol.received_clock({"clock": 101 + leap}, "login", ahead_of=100)


def test_undecodable_json_is_refused_in_json() -> None:
    with pytest.raises(ProtocolError) as e:
        decode(b'  {"service": "login", "data": {"user": "a\"b"}')
    assert e.value.fmt == "json" and "not valid JSON" in e.value.description
    with pytest.raises(ProtocolError) as e:
        decode(b"\x82\xa7service\xa5login")  # truncated MessagePack stays MessagePack
    assert e.value.fmt == "msgpack"


def test_a_huge_service_name_is_not_echoed_whole() -> None:
    with pytest.raises(ProtocolError) as e:
        decode(pack({"service": "x" * 100_000, "data": {}}))
    assert len(e.value.description) < 100 and e.value.service == "error"


def test_a_huge_history_cursor_is_refused_without_echo() -> None:
    with pytest.raises(ProtocolError) as e:
        protocol.history_query({"channel": "geral", "before": "x" * 100_000})
    assert len(e.value.description) < 100


@pytest.mark.parametrize("name", ["\u0301", "\u0301abc", "ana\u2028bia", "ana\u2029",
                                  "\ue000", "evil\u202euser"])
def test_names_without_a_base_character_or_with_separators_are_refused(name: str) -> None:
    assert protocol.name_problem(name, "user") is not None


@pytest.mark.parametrize("name", ["José", "a\u0301", "日本", "ana bia", "😀"])
def test_ordinary_names_are_accepted(name: str) -> None:
    assert protocol.name_problem(name, "user") is None


def test_flat_replies_carry_the_data_fields_at_the_top_level() -> None:
    ok = protocol.flatten(protocol.message("users", {"users": ["ana"]}, clock=3, timestamp=1.0))
    assert ok["data"]["users"] == ["ana"] and ok["users"] == ["ana"]
    assert ok["success"] is True and ok["clock"] == 3 and "message" not in ok
    bad = protocol.flatten(protocol.message(
        "login", protocol.error_data("login", "no"), clock=4, timestamp=1.0))
    assert bad["success"] is False and bad["message"] == "no" and bad["status"] == "erro"


def test_message_builds_the_envelope() -> None:
    data = {"status": "OK"}
    assert protocol.message("publish", data, clock=4, timestamp=2.0) == {
        "service": "publish", "data": {"status": "OK", "timestamp": 2.0, "clock": 4}}
    assert data == {"status": "OK"}  # the caller's dict is not modified


# -- names -----------------------------------------------------------------------------

@pytest.mark.parametrize("value,words", [
    (None, "missing field 'user'"),
    (5, "must be a string, got an integer"),
    (b"ana", "must be a string, got bytes"),
    (["ana"], "must be a string, got a list"),
    ("", "empty"),
    ("a" * 65, "longer than 64"),
    (" ana", "blanks"), ("ana ", "blanks"), ("ana\t", "blanks"), ("\u00a0ana", "blanks"),
    ("an\x00a", "control"), ("an\na", "control"), ("an\x1ba", "control"),
    ("an\u200ba", "control"), ("an\x7fa", "control"),
    ("servers", "reserved"),
])
def test_bad_name(value, words: str) -> None:
    problem = protocol.name_problem(value, "user")
    assert problem is not None and words in problem
    with pytest.raises(ProtocolError) as info:
        protocol.require_name({"user": value} if value is not None else {}, "user", "login")
    assert info.value.service == "login" and words in info.value.description


@pytest.mark.parametrize("value", ["a", "a" * 64, "ana maria", "José", "用户", "Servers",
                                   "servers2", "🙂"])
def test_good_name(value: str) -> None:
    assert protocol.name_problem(value, "channel") is None
    assert protocol.require_name({"channel": value}, "channel", "channel") == value


@pytest.mark.parametrize("data,words", [
    ({}, "missing field"), ({"message": 3}, "must be a string"),
    ({"message": b"hi"}, "must be a string"), ({"message": "  "}, "empty"),
    ({"message": "x" * (protocol.MAX_MESSAGE + 1)}, "longer"),
])
def test_bad_text(data: dict, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        protocol.require_text(data, "message", "publish")
    assert words in info.value.description and info.value.service == "publish"


def test_good_text_is_returned_unchanged() -> None:
    assert protocol.require_text({"message": " hi\n"}, "message", "publish") == " hi\n"


@pytest.mark.parametrize("data,expected", [
    ({}, None), ({"id": None}, None), ({"id": "r-1"}, "r-1"), ({"id": 12}, "12"),
    ({"id": "x" * 128}, "x" * 128),
])
def test_request_id(data: dict, expected) -> None:
    assert protocol.request_id(data, "login") == expected


@pytest.mark.parametrize("rid", ["", "x" * 129, True, 1.5, b"r", ["r"]])
def test_bad_request_id(rid) -> None:
    with pytest.raises(ProtocolError) as info:
        protocol.request_id({"id": rid}, "login")
    assert "'id'" in info.value.description


# -- history ---------------------------------------------------------------------------

@pytest.mark.parametrize("data,expected", [
    ({"channel": "geral"}, ("channel", "geral", 100, None)),
    ({"user": "ana", "limit": 5, "before": "s1:9"}, ("user", "ana", 5, "s1:9")),
    ({"channel": "geral", "user": "ana"}, ("channel", "geral", 100, None)),
    ({"channel": None, "user": "ana"}, ("user", "ana", 100, None)),
    ({"channel": "geral", "limit": 10**6}, ("channel", "geral", protocol.MAX_HISTORY_LIMIT,
                                             None)),
    ({"channel": "geral", "before": "s2:1"}, ("channel", "geral", 100, "s2:1")),
])
def test_history_query(data: dict, expected: tuple) -> None:
    assert protocol.history_query(data) == expected


@pytest.mark.parametrize("data,words", [
    ({}, "needs 'channel' or 'user'"),
    ({"channel": None}, "needs 'channel' or 'user'"),
    ({"channel": ""}, "empty"),
    ({"channel": 3}, "must be a string"),
    ({"user": "servers"}, "reserved"),
    ({"channel": "g", "limit": 0}, "'limit'"),
    ({"channel": "g", "limit": -1}, "'limit'"),
    ({"channel": "g", "limit": "5"}, "'limit'"),
    ({"channel": "g", "limit": True}, "'limit'"),
    ({"channel": "g", "limit": 2.5}, "'limit'"),
    ({"channel": "g", "before": 3}, "'before'"),
    ({"channel": "g", "before": 1.5}, "'before'"),
    ({"channel": "g", "before": False}, "'before'"),
])
def test_bad_history_query(data: dict, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        protocol.history_query(data)
    assert words in info.value.description and info.value.service == "history"


# -- reply bodies ----------------------------------------------------------------------

@pytest.mark.parametrize("service,word", [
    ("login", "sucesso"), ("channel", "sucesso"), ("publish", "OK"), ("message", "OK")])
def test_success_data(service: str, word: str) -> None:
    assert protocol.success_data(service) == {"status": word}


@pytest.mark.parametrize("service,carries_message", [
    ("login", False), ("channel", False), ("publish", True), ("message", True),
    ("error", False)])
def test_error_data(service: str, carries_message: bool) -> None:
    data = protocol.error_data(service, "boom")
    assert data["status"] == "erro" and data["description"] == "boom"
    assert data.get("message") == ("boom" if carries_message else None)
