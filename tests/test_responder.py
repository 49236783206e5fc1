"""Responder: one reply per request, whatever the handler does, in the requester's format."""

from __future__ import annotations

import json

import msgpack
import pytest
from twisted.internet import defer
from twisted.logger import Logger

from bbd import protocol
from bbd.lamport import LamportClock
from bbd.protocol import ProtocolError
from bbd.services.responder import Responder


def _serve(handler, body: bytes, fallback_id: str | None = None) -> tuple[list[dict], list]:
    responder = Responder(LamportClock(), lambda: 12.5, Logger())
    observed: list = []
    responder.observe = lambda service, status, seconds: observed.append((service, status))
    sent: list[bytes] = []
    responder.handle(sent.append, body, {"publish": handler}, fallback_id)
    return [protocol.unpack(b) if b[:1] != b"{" else json.loads(b) for b in sent], observed


REQ = protocol.encode({"service": "publish", "data": {"user": "a", "clock": 3}})


def _ok(req):
    return {"status": "OK", "seen": req.fallback_id}


def _later(value):
    def handler(req):
        return value
    return handler


@pytest.mark.parametrize("handler, status", [
    (_ok, "OK"),  # answered at once
    (lambda req: defer.succeed(_ok(req)), "OK"),  # through a Deferred
    (lambda req: defer.fail(ProtocolError("no such user", "publish")), "erro"),
    (_later(None), "erro"),  # a reply that cannot be made: answered as a failure
])
def test_one_reply_each_way(handler, status: str) -> None:
    replies, observed = _serve(handler, REQ, fallback_id="rid-1")
    assert len(replies) == 1 and replies[0]["service"] == "publish"
    assert replies[0]["data"]["status"] == status
    assert replies[0]["data"]["clock"] >= 4 and replies[0]["data"]["timestamp"] == 12.5
    assert observed == [("publish", status)]
    if status == "OK":
        assert replies[0]["data"]["seen"] == "rid-1"


def test_a_handler_that_raises_is_answered_with_its_description() -> None:
    def refuse(req):
        raise ProtocolError("no such channel", "publish")

    replies, _ = _serve(refuse, REQ)
    assert replies[0]["data"] == {"status": "erro", "description": "no such channel",
                                  "message": "no such channel", "timestamp": 12.5, "clock": 4}


def test_a_crash_is_an_internal_error_not_silence() -> None:
    replies, _ = _serve(lambda req: 1 / 0, REQ)
    assert replies[0]["data"]["status"] == "erro"
    assert "internal error" in replies[0]["data"]["description"]


def test_a_pending_reply_is_sent_when_it_fires_in_json_for_json() -> None:
    d: defer.Deferred = defer.Deferred()
    body = json.dumps({"service": "publish", "data": {}}).encode()
    responder = Responder(LamportClock(), lambda: 1.0, Logger())
    sent: list[bytes] = []
    responder.handle(sent.append, body, {"publish": lambda req: d})
    assert sent == []
    d.callback({"status": "OK"})
    assert json.loads(sent[0])["data"]["status"] == "OK"


def test_encode_reuses_its_packer_yet_each_message_stands_alone() -> None:
    first = {"service": "publish", "data": {"status": "OK", "clock": 1, "timestamp": 2.0}}
    assert protocol.encode(first) == msgpack.packb(first, use_bin_type=True)
    with pytest.raises(TypeError):
        protocol.encode({"service": "x", "data": {"bad": object()}})
    second = {"service": "login", "data": {"user": "é", "raw": b"\x00", "n": 2**53 - 1}}
    assert protocol.encode(second) == msgpack.packb(second, use_bin_type=True)
    assert protocol.unpack(protocol.encode(second)) == second
