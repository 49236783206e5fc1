"""What each kind of operation is, in one table: its fields, the uniqueness keys it
competes for, the board view that shows it, the data file that stores it, and whether and
how it is published. ``bbd.state`` (Op, Board), ``bbd.datafiles`` and the server's
publication read it; the rules that decide whether a write is allowed stay in
``Board.check``.

Adding a kind means a row here, a ``_show_<view>``/``_hide_<view>`` pair on ``Board`` for a
new view, and its client request in ``bbd.services.server``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class Published(Protocol):
    """What a publication reads of an operation (``bbd.state.Op``)."""

    @property
    def fields(self) -> dict[str, str]: ...
    @property
    def timestamp(self) -> float: ...
    @property
    def clock(self) -> int: ...
    @property
    def id(self) -> str: ...


@dataclass(frozen=True)
class OpKind:
    name: str
    # Required fields, in the order an Op stores them (f1, f2, f3); exactly these, no more.
    fields: tuple[str, ...]
    # The field whose value is a uniqueness key (``<field>:<value>``; the least operation in
    # the total order holding it wins), besides the request id every kind may carry.
    unique: str | None
    # The Board view (a sorted list) that shows its visible operations, and so the data
    # file that stores them. ``by_user``: stored inside each user's entry, not one per op.
    view: str
    data_file: str
    by_user: bool = False
    # Published on the proxy once it took effect: the field naming the topic, and the
    # payload a subscriber receives (before timestamp, clock and id are added).
    topic: str | None = None
    payload: Callable[[Mapping[str, str]], dict[str, Any]] | None = None


def _publish_payload(f: Mapping[str, str]) -> dict[str, Any]:
    return {"service": "publish", "user": f["user"], "channel": f["channel"],
            "message": f["message"]}


def _message_payload(f: Mapping[str, str]) -> dict[str, Any]:
    # "from"/"to" for the dialect some clients of the standard read.
    return {"service": "message", "src": f["src"], "dst": f["dst"], "user": f["src"],
            "from": f["src"], "to": f["dst"], "message": f["message"]}


KINDS: dict[str, OpKind] = {k.name: k for k in (
    OpKind("login", ("user",), unique=None, view="users_order", data_file="usuarios.json",
           by_user=True),
    OpKind("channel", ("channel",), unique="channel", view="channels",
           data_file="canais.json"),
    OpKind("publish", ("user", "channel", "message"), unique=None, view="posts",
           data_file="publicacoes.json", topic="channel", payload=_publish_payload),
    OpKind("message", ("src", "dst", "message"), unique=None, view="messages",
           data_file="mensagens.json", topic="dst", payload=_message_payload),
)}

# The four data files, in the order they are written and listed.
DATA_FILES: tuple[str, ...] = tuple(k.data_file for k in KINDS.values())
# Field values that are names, shared by many operations (interned, stored once).
NAME_FIELDS = frozenset({"user", "channel", "src", "dst"})


def published(kind: str) -> bool:
    return KINDS[kind].payload is not None


def publication(op: Published, kind: str) -> tuple[str, dict[str, Any]]:
    """The topic and payload that announce a visible operation of a published kind."""
    k = KINDS[kind]
    assert k.payload is not None and k.topic is not None, f"{kind} is not published"
    f = op.fields
    payload = k.payload(f)
    payload.update(timestamp=op.timestamp, clock=op.clock, id=op.id)
    return f[k.topic], payload
