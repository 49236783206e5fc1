"""The wire format of PROTOCOL.md: envelope, aliases, JSON fallback and validation.

Pure: bytes in, dicts out, and every way a frame can be wrong becomes a ProtocolError
whose text a person can read. Daemons answer it with an ``erro`` reply and carry on.
"""

from __future__ import annotations

import json
import threading
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

import msgpack

Format = Literal["msgpack", "json"]

MAX_NAME = 64
MAX_MESSAGE = 64 * 1024
MAX_ID = 128
# The largest integer every client language of the standard holds exactly (JavaScript's
# Number.MAX_SAFE_INTEGER): no Lamport clock, sequence number or count from outside may
# exceed it. One adopted 2^64 - 200 once left every process unable to encode a message.
MAX_CLOCK = 2**53 - 1
# A client's clock may run ahead of the board's by at most this much: a client cannot push
# the board toward MAX_CLOCK in a few requests (it would take 2^29 maximal leaps).
MAX_CLOCK_LEAP = 2**24
# Text that is echoed back in an error description is cut to this many characters.
MAX_ECHO = 40
DEFAULT_HISTORY_LIMIT = 100
MAX_HISTORY_LIMIT = 1000
RESERVED_NAMES = frozenset({"servers"})

# The standard's status words differ by service: login/channel say "sucesso", publish/message "OK".
SUCCESS_WORD = {"login": "sucesso", "channel": "sucesso", "publish": "OK", "message": "OK"}


class PeerUnavailable(Exception):
    """A request to another daemon could not be sent or was not answered in time (raised
    by ``bbd.sockets``; here so that services can catch it without importing txZMQ)."""


class ProtocolError(Exception):
    """A request that cannot be served; ``service`` is echoed in the ``erro`` reply."""

    def __init__(self, description: str, service: str = "error",
                 fmt: Format = "msgpack") -> None:
        super().__init__(description)
        self.description = description
        self.service = service
        self.fmt = fmt  # the format the refusal is answered in


@dataclass(frozen=True)
class Request:
    service: str
    data: dict[str, Any]
    fmt: Format
    fallback_id: str | None = None  # the broker's request id, for a client that sent none


def decode(frame: bytes) -> Request:
    """Parse one request frame (MessagePack, or a JSON object as fallback)."""
    if not frame:
        raise ProtocolError("empty frame: expected a MessagePack map")
    # A frame whose first non-blank byte is "{" is JSON (PROTOCOL.md): also when it does not
    # parse, so that a JSON client can read the refusal.
    fmt: Format = "json" if frame.lstrip()[:1] == b"{" else "msgpack"
    obj = _parse_json(frame) if fmt == "json" else _unpack(frame)
    if not isinstance(obj, dict):
        raise ProtocolError(f"expected a map with 'service' and 'data', got {_kind(obj)}",
                            fmt=fmt)
    service = obj.get("service", obj.get("opcao"))
    if service is None:
        raise ProtocolError("missing field 'service'", fmt=fmt)
    if not isinstance(service, str):
        raise ProtocolError(f"field 'service' must be a string, got {_kind(service)}", fmt=fmt)
    if len(service) > MAX_NAME:
        raise ProtocolError(f"unknown service {quote(service)}", "error", fmt)
    data = obj.get("data", obj.get("dados", {}))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProtocolError(f"field 'data' must be a map, got {_kind(data)}", service, fmt)
    for key in data:
        if not isinstance(key, str):
            raise ProtocolError("every key in 'data' must be a string", service, fmt)
    return Request(service, data, fmt)


def _parse_json(frame: bytes) -> Any:
    try:
        return json.loads(frame.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProtocolError("text is not valid UTF-8", fmt="json") from None
    except RecursionError:
        raise ProtocolError("frame is not valid JSON (nested too deeply)", fmt="json") from None
    except ValueError as e:
        raise ProtocolError(f"frame is not valid JSON ({type(e).__name__})", fmt="json") \
            from None


def _unpack(frame: bytes) -> Any:
    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except UnicodeDecodeError:
        raise ProtocolError("text is not valid UTF-8") from None
    except Exception as e:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(f"frame is not valid MessagePack ({type(e).__name__})") from None


# One Packer per thread, reused: ``msgpack.packb`` builds a new Packer (and its buffer)
# for every message, which costs several times the packing of a small reply. A Packer
# resets its buffer after each ``pack``, also after one that raised.
_packers = threading.local()


def encode(message: dict[str, Any], fmt: Format = "msgpack") -> bytes:
    if fmt == "json":
        return json.dumps(message, ensure_ascii=False).encode("utf-8")
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(message)


def unpack(payload: bytes) -> Any:
    """Decode a MessagePack payload from a trusted peer or a publication."""
    return msgpack.unpackb(payload, raw=False, strict_map_key=False)


def message(service: str, data: dict[str, Any], *, clock: int, timestamp: float) -> dict:
    body = dict(data)
    body["timestamp"] = timestamp
    body["clock"] = clock
    return {"service": service, "data": body}


def flatten(msg: dict[str, Any]) -> dict[str, Any]:
    """Copy a reply's ``data`` fields to the top level, with ``success`` and, on a refusal,
    ``message``: the flat dialect some clients of the standard read (an extension; standard
    clients read ``data`` and see no difference)."""
    data = msg["data"]
    for key, value in data.items():
        msg.setdefault(key, value)
    status = data.get("status")
    msg["success"] = status != "erro"
    if status == "erro":
        msg["message"] = data.get("description", "")
    return msg


def error_data(service: str, description: str) -> dict[str, Any]:
    """The ``erro`` reply body; publish/message carry the text in ``message`` (the standard)."""
    data: dict[str, Any] = {"status": "erro", "description": description}
    if service in ("publish", "message"):
        data["message"] = description
    return data


def success_data(service: str) -> dict[str, Any]:
    return {"status": SUCCESS_WORD[service]}


def received_clock(data: dict[str, Any], service: str = "error",
                   ahead_of: int | None = None) -> int:
    """The Lamport clock a message carries. A missing or non-integer one counts as 0; one
    that cannot be a real clock (negative, beyond MAX_CLOCK, or with ``ahead_of`` more than
    MAX_CLOCK_LEAP beyond that local value) is refused, never adopted."""
    clock = data.get("clock")
    if isinstance(clock, bool) or not isinstance(clock, int):
        return 0
    if clock < 0 or clock > MAX_CLOCK:
        raise ProtocolError(f"field 'clock' must be a Lamport clock from 0 to {MAX_CLOCK}",
                            service)
    if ahead_of is not None and clock > ahead_of + MAX_CLOCK_LEAP:
        raise ProtocolError(f"field 'clock' ({clock}) is far ahead of the board's clock "
                            f"({ahead_of}); restart the client to reset its clock", service)
    return clock


def is_count(value: Any, top: int = MAX_CLOCK) -> bool:
    """An integer from outside that can be a count, a sequence number or a clock."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top


def quote(value: str) -> str:
    """``value`` quoted for an error description, cut so a reply never echoes a huge input."""
    cut = value if len(value) <= MAX_ECHO else value[:MAX_ECHO] + "..."
    return repr(cut)


def name_problem(value: Any, what: str) -> str | None:
    """Why ``value`` is not a valid user or channel name, or None if it is."""
    if value is None:
        return f"missing field '{what}'"
    if not isinstance(value, str):
        return f"field '{what}' must be a string, got {_kind(value)}"
    if not value:
        return f"{what} name is empty"
    if len(value) > MAX_NAME:
        return f"{what} name is longer than {MAX_NAME} characters"
    if value != value.strip():
        return f"{what} name has leading or trailing blanks"
    if any(unicodedata.category(c) in _NOT_IN_NAMES for c in value):
        return f"{what} name contains control characters or line separators"
    if unicodedata.category(value[0]).startswith("M"):
        return f"{what} name starts with a combining mark"
    if value in RESERVED_NAMES:
        return f"'{value}' is a reserved name"
    return None


# Control, format, surrogate, private-use and unassigned code points, and the line and
# paragraph separators U+2028/U+2029, which break the lines of logs and terminals.
_NOT_IN_NAMES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def require_name(data: dict[str, Any], field: str, service: str) -> str:
    problem = name_problem(data.get(field), field)
    if problem:
        raise ProtocolError(problem, service)
    return data[field]


def text_problem(value: Any, what: str) -> str | None:
    """Why ``value`` is not a valid message text, or None if it is."""
    if value is None:
        return f"missing field '{what}'"
    if not isinstance(value, str):
        return f"field '{what}' must be a string, got {_kind(value)}"
    if not value.strip():
        return f"{what} is empty"
    if len(value) > MAX_MESSAGE:
        return f"{what} is longer than {MAX_MESSAGE} characters"
    return None


def require_text(data: dict[str, Any], field: str, service: str) -> str:
    problem = text_problem(data.get(field), field)
    if problem:
        raise ProtocolError(problem, service)
    return data[field]


def request_id(data: dict[str, Any], service: str) -> str | None:
    rid = data.get("id")
    if rid is None:
        return None
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        raise ProtocolError("field 'id' must be a string", service)
    rid = str(rid)
    if not rid or len(rid) > MAX_ID:
        raise ProtocolError(f"field 'id' must be 1 to {MAX_ID} characters", service)
    return rid


def with_aliases(data: dict[str, Any], aliases: dict[str, str]) -> dict[str, Any]:
    """``data`` with each missing standard field taken from its alias (``src`` from
    ``from``, ...), for clients of other dialects."""
    missing = {field: data[alias] for field, alias in aliases.items()
               if data.get(field) is None and alias in data}
    return {**data, **missing} if missing else data


def history_query(data: dict[str, Any], kind: str | None = None,
                  service: str = "history") -> tuple[str, str, int, str | None]:
    """('channel'|'user', name, limit, before) for the ``history`` extension; ``kind``
    fixes which one (the dialect's ``history_channel`` and ``history_messages``)."""
    if kind is None:
        if data.get("channel") is not None:
            kind = "channel"
        elif data.get("user") is not None:
            kind = "user"
        else:
            raise ProtocolError("history needs 'channel' or 'user'", service)
    name = require_name(data, kind, service)
    limit = data.get("limit", DEFAULT_HISTORY_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ProtocolError("field 'limit' must be a positive integer", service)
    before = data.get("before")
    if before is not None and (not isinstance(before, str) or len(before) > MAX_ID):
        raise ProtocolError("field 'before' must be the id of an item (a string)", service)
    return kind, name, min(limit, MAX_HISTORY_LIMIT), before


def _kind(value: Any) -> str:
    return {
        dict: "a map", list: "a list", str: "a string", bytes: "bytes", int: "an integer",
        float: "a number", bool: "a boolean", type(None): "nil",
    }.get(type(value), type(value).__name__)
