"""The wire format of PROTOCOL.md: envelope, aliases, JSON fallback and validation.

Pure: bytes in, dicts out, and every way a frame can be wrong becomes a ProtocolError
whose text a person can read. Daemons answer it with an ``erro`` reply and carry on.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

import msgpack

Format = Literal["msgpack", "json"]

MAX_NAME = 64
MAX_MESSAGE = 64 * 1024
DEFAULT_HISTORY_LIMIT = 100
MAX_HISTORY_LIMIT = 1000
RESERVED_NAMES = frozenset({"servers"})

# The standard's status words differ by service: login/channel say "sucesso", publish/message "OK".
SUCCESS_WORD = {"login": "sucesso", "channel": "sucesso", "publish": "OK", "message": "OK"}


class ProtocolError(Exception):
    """A request that cannot be served; ``service`` is echoed in the ``erro`` reply."""

    def __init__(self, description: str, service: str = "error") -> None:
        super().__init__(description)
        self.description = description
        self.service = service


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
    fmt: Format = "msgpack"
    obj: Any
    if frame.lstrip()[:1] == b"{":
        try:
            obj = json.loads(frame.decode("utf-8"))
            fmt = "json"
        except (UnicodeDecodeError, ValueError):
            obj = _unpack(frame)
    else:
        obj = _unpack(frame)
    if not isinstance(obj, dict):
        raise ProtocolError(f"expected a map with 'service' and 'data', got {_kind(obj)}")
    service = obj.get("service", obj.get("opcao"))
    if service is None:
        raise ProtocolError("missing field 'service'")
    if not isinstance(service, str):
        raise ProtocolError(f"field 'service' must be a string, got {_kind(service)}")
    data = obj.get("data", obj.get("dados", {}))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProtocolError(f"field 'data' must be a map, got {_kind(data)}", service)
    for key in data:
        if not isinstance(key, str):
            raise ProtocolError("every key in 'data' must be a string", service)
    return Request(service, data, fmt)


def _unpack(frame: bytes) -> Any:
    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except UnicodeDecodeError:
        raise ProtocolError("text is not valid UTF-8") from None
    except Exception as e:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(f"frame is not valid MessagePack ({type(e).__name__})") from None


def encode(message: dict[str, Any], fmt: Format = "msgpack") -> bytes:
    if fmt == "json":
        return json.dumps(message, ensure_ascii=False).encode("utf-8")
    return msgpack.packb(message, use_bin_type=True)


def unpack(payload: bytes) -> Any:
    """Decode a MessagePack payload from a trusted peer or a publication."""
    return msgpack.unpackb(payload, raw=False, strict_map_key=False)


def message(service: str, data: dict[str, Any], *, clock: int, timestamp: float) -> dict:
    body = dict(data)
    body["timestamp"] = timestamp
    body["clock"] = clock
    return {"service": service, "data": body}


def error_data(service: str, description: str) -> dict[str, Any]:
    """The ``erro`` reply body; publish/message carry the text in ``message`` (the standard)."""
    data: dict[str, Any] = {"status": "erro", "description": description}
    if service in ("publish", "message"):
        data["message"] = description
    return data


def success_data(service: str) -> dict[str, Any]:
    return {"status": SUCCESS_WORD[service]}


def received_clock(data: dict[str, Any]) -> int:
    """A missing or malformed Lamport clock counts as 0, never as an error."""
    clock = data.get("clock")
    if isinstance(clock, bool) or not isinstance(clock, int) or clock < 0:
        return 0
    return clock


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
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in value):
        return f"{what} name contains control characters"
    if value in RESERVED_NAMES:
        return f"'{value}' is a reserved name"
    return None


def require_name(data: dict[str, Any], field: str, service: str) -> str:
    problem = name_problem(data.get(field), field)
    if problem:
        raise ProtocolError(problem, service)
    return data[field]


def require_text(data: dict[str, Any], field: str, service: str) -> str:
    value = data.get(field)
    if value is None:
        raise ProtocolError(f"missing field '{field}'", service)
    if not isinstance(value, str):
        raise ProtocolError(f"field '{field}' must be a string, got {_kind(value)}", service)
    if not value.strip():
        raise ProtocolError(f"{field} is empty", service)
    if len(value) > MAX_MESSAGE:
        raise ProtocolError(f"{field} is longer than {MAX_MESSAGE} characters", service)
    return value


def request_id(data: dict[str, Any], service: str) -> str | None:
    rid = data.get("id")
    if rid is None:
        return None
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        raise ProtocolError("field 'id' must be a string", service)
    rid = str(rid)
    if not rid or len(rid) > 128:
        raise ProtocolError("field 'id' must be 1 to 128 characters", service)
    return rid


def history_query(data: dict[str, Any]) -> tuple[str, str, int, str | None]:
    """('channel'|'user', name, limit, before) for the ``history`` extension."""
    if "channel" in data and data["channel"] is not None:
        kind, name = "channel", require_name(data, "channel", "history")
    elif "user" in data and data["user"] is not None:
        kind, name = "user", require_name(data, "user", "history")
    else:
        raise ProtocolError("history needs 'channel' or 'user'", "history")
    limit = data.get("limit", DEFAULT_HISTORY_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ProtocolError("field 'limit' must be a positive integer", "history")
    before = data.get("before")
    if before is not None and not isinstance(before, str):
        raise ProtocolError("field 'before' must be the id of an item (a string)", "history")
    return kind, name, min(limit, MAX_HISTORY_LIMIT), before


def _kind(value: Any) -> str:
    return {
        dict: "a map", list: "a list", str: "a string", bytes: "bytes", int: "an integer",
        float: "a number", bool: "a boolean", type(None): "nil",
    }.get(type(value), type(value).__name__)
