"""The board as a deterministic, replicated state machine.

Every write is an operation ``Op`` with a unique id (origin server, sequence number) and a
Lamport stamp. A board holds a *set* of operations and derives users, channels, posts and
private messages from them in one total order, ``(clock, origin, seq)``: two boards holding
the same set agree on every list, whatever order the operations arrived in.

Uniqueness is one rule. A new channel's name and a client's request id are *keys*; among the
operations that share a key, the least in the total order wins, on every replica. Losers stay
recorded (they are part of the set) but are invisible: never listed, never published. A
request-id loser's client gets the winner's answer; a channel-name loser's client gets
``erro``.

Pure: no clock, no I/O. Time and Lamport stamps come in as arguments.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

OrderKey = tuple[int, str, int]
WRITE_KINDS = ("login", "channel", "publish", "message")


@dataclass(frozen=True, slots=True)
class Op:
    origin: str
    seq: int
    clock: int
    kind: str
    timestamp: float
    fields: dict[str, str]
    rid: str | None = None

    @property
    def id(self) -> str:
        return f"{self.origin}:{self.seq}"

    @property
    def order(self) -> OrderKey:
        return (self.clock, self.origin, self.seq)

    def keys(self) -> list[str]:
        """The uniqueness keys this operation competes for."""
        keys = []
        if self.kind == "channel":
            keys.append("channel:" + self.fields["channel"])
        if self.rid is not None:
            keys.append("rid:" + self.rid)
        return keys

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "origin": self.origin, "seq": self.seq, "clock": self.clock,
            "kind": self.kind, "timestamp": self.timestamp, "fields": self.fields,
        }
        if self.rid is not None:
            d["rid"] = self.rid
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Op:
        """Rebuild an operation from the journal or a peer; raises ValueError if malformed."""
        try:
            op = cls(
                origin=str(d["origin"]), seq=int(d["seq"]), clock=int(d["clock"]),
                kind=str(d["kind"]), timestamp=float(d["timestamp"]),
                fields={str(k): str(v) for k, v in dict(d["fields"]).items()},
                rid=None if d.get("rid") is None else str(d["rid"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed operation: {e}") from None
        required = {"login": ("user",), "channel": ("channel",),
                    "publish": ("user", "channel", "message"),
                    "message": ("src", "dst", "message")}.get(op.kind)
        if required is None or any(f not in op.fields for f in required):
            raise ValueError(f"malformed operation {op.id}: kind {op.kind!r}")
        return op


def parse_op_id(op_id: str) -> tuple[str, int]:
    origin, _, seq = op_id.rpartition(":")
    if not origin or not seq.isdigit():
        raise ValueError(f"not an operation id: {op_id!r}")
    return origin, int(seq)


@dataclass
class _Sorted:
    """A list kept sorted by operation order (bisect; cheap for the append-mostly case)."""

    items: list[tuple[OrderKey, Op]] = field(default_factory=list)

    def add(self, op: Op) -> None:
        item = (op.order, op)
        if not self.items or self.items[-1][0] < op.order:
            self.items.append(item)
        else:
            insort(self.items, item, key=lambda x: x[0])

    def remove(self, op: Op) -> None:
        i = bisect_left(self.items, op.order, key=lambda x: x[0])
        if i < len(self.items) and self.items[i][1] is op:
            del self.items[i]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Op]:
        return (op for _, op in self.items)


class Board:
    def __init__(self, name: str) -> None:
        self.name = name
        self.ops: dict[str, Op] = {}
        self.winners: dict[str, Op] = {}  # uniqueness key -> least op holding it
        # Version vector: per origin, the highest sequence held with no gap below it.
        self.vector: dict[str, int] = {}
        self._beyond: dict[str, set[int]] = {}  # held sequences above the vector
        self._by_origin: dict[str, dict[int, Op]] = {}
        self.next_seq = 1
        # Derived, visible views.
        self.user_logins: dict[str, _Sorted] = {}
        self.users_order = _Sorted()  # each user's first login
        self.channels = _Sorted()
        self.channel_posts: dict[str, _Sorted] = {}
        self.posts = _Sorted()
        self.user_messages: dict[str, _Sorted] = {}
        self.messages = _Sorted()
        self._shown: set[str] = set()
        self.applied = 0

    # -- writing ---------------------------------------------------------------------

    def check(self, kind: str, fields: dict[str, str]) -> str | None:
        """Why the origin must refuse this write now, or None. Existence never reverts,
        so a write valid here stays valid on every replica."""
        if kind == "channel" and self.has_channel(fields["channel"]):
            return "channel already exists"
        if kind == "publish":
            if not self.has_channel(fields["channel"]):
                return f"channel '{fields['channel']}' does not exist"
            if fields["user"] not in self.user_logins:
                return f"user '{fields['user']}' has not logged in"
        if kind == "message":
            for role in ("src", "dst"):
                if fields[role] not in self.user_logins:
                    return f"user '{fields[role]}' has not logged in"
        return None

    def propose(self, kind: str, fields: dict[str, str], *, clock: int, timestamp: float,
                rid: str | None = None) -> Op:
        """A new operation of this board's own origin (not yet applied)."""
        op = Op(self.name, self.next_seq, clock, kind, timestamp, dict(fields), rid)
        self.next_seq += 1
        return op

    def apply(self, op: Op) -> bool:
        """Add an operation to the set; False if it was already there."""
        if op.id in self.ops:
            return False
        self.ops[op.id] = op
        self.applied += 1
        self._track(op)
        visible = True
        for key in op.keys():
            holder = self.winners.get(key)
            if holder is None or op.order < holder.order:
                self.winners[key] = op
                if holder is not None:
                    self._hide(holder)
            else:
                visible = False
        if visible:
            self._show(op)
        return True

    def _track(self, op: Op) -> None:
        self._by_origin.setdefault(op.origin, {})[op.seq] = op
        if op.origin == self.name and op.seq >= self.next_seq:
            self.next_seq = op.seq + 1
        top = self.vector.get(op.origin, 0)
        if op.seq <= top:
            return
        beyond = self._beyond.setdefault(op.origin, set())
        beyond.add(op.seq)
        while top + 1 in beyond:
            top += 1
            beyond.discard(top)
        self.vector[op.origin] = top

    def visible(self, op: Op) -> bool:
        return all(self.winners.get(k) is op for k in op.keys())

    def _show(self, op: Op) -> None:
        self._shown.add(op.id)
        f = op.fields
        if op.kind == "login":
            logins = self.user_logins.get(f["user"])
            if logins is None:
                logins = self.user_logins[f["user"]] = _Sorted()
            first = next(iter(logins), None)
            logins.add(op)
            if first is None or op.order < first.order:
                if first is not None:
                    self.users_order.remove(first)
                self.users_order.add(op)
        elif op.kind == "channel":
            self.channels.add(op)
        elif op.kind == "publish":
            self.posts.add(op)
            self.channel_posts.setdefault(f["channel"], _Sorted()).add(op)
        elif op.kind == "message":
            self.messages.add(op)
            for user in {f["src"], f["dst"]}:
                self.user_messages.setdefault(user, _Sorted()).add(op)

    def _hide(self, op: Op) -> None:
        """Undo ``_show`` for an op that just lost a key to an earlier competitor."""
        if op.id not in self._shown:
            return
        self._shown.discard(op.id)
        f = op.fields
        if op.kind == "login":
            logins = self.user_logins[f["user"]]
            first = next(iter(logins))
            logins.remove(op)
            if first is op:
                self.users_order.remove(op)
                nxt = next(iter(logins), None)
                if nxt is None:
                    del self.user_logins[f["user"]]
                else:
                    self.users_order.add(nxt)
        elif op.kind == "channel":
            self.channels.remove(op)
        elif op.kind == "publish":
            self.posts.remove(op)
            self.channel_posts[f["channel"]].remove(op)
        elif op.kind == "message":
            self.messages.remove(op)
            for user in {f["src"], f["dst"]}:
                self.user_messages[user].remove(op)

    # -- results and replication -----------------------------------------------------

    def by_rid(self, rid: str) -> Op | None:
        return self.winners.get("rid:" + rid)

    def outcome(self, op: Op) -> str | None:
        """None if ``op`` took effect, else why not (the client's ``erro`` text).
        A request-id loser answers as its winner did."""
        if op.rid is not None:
            winner = self.winners.get("rid:" + op.rid)
            if winner is not None and winner is not op:
                op = winner
        if op.kind == "channel" and self.winners.get("channel:" + op.fields["channel"]) is not op:
            return "channel already exists"
        return None

    def competitors(self, op: Op) -> list[Op]:
        """Operations held here that beat ``op`` on one of its keys (sent back in acks)."""
        out = []
        for key in op.keys():
            holder = self.winners.get(key)
            if holder is not None and holder is not op and holder.order < op.order:
                out.append(holder)
        return out

    def missing_for(self, vector: dict[str, int], limit: int) -> tuple[list[Op], bool]:
        """Operations a peer with ``vector`` lacks, oldest sequence first per origin;
        the bool says whether more remain beyond ``limit``."""
        out: list[Op] = []
        for origin in sorted(self._by_origin):
            held = self._by_origin[origin]
            have = vector.get(origin, 0)
            if self.vector.get(origin, 0) <= have and not self._beyond.get(origin):
                continue
            for seq in sorted(s for s in held if s > have):
                if len(out) >= limit:
                    return out, True
                out.append(held[seq])
        return out, False

    # -- reading ---------------------------------------------------------------------

    def has_channel(self, name: str) -> bool:
        return ("channel:" + name) in self.winners

    def has_user(self, name: str) -> bool:
        return name in self.user_logins

    def user_list(self) -> list[str]:
        return [op.fields["user"] for op in self.users_order]

    def channel_list(self) -> list[str]:
        return [op.fields["channel"] for op in self.channels]

    def history(self, kind: str, name: str, limit: int, before: int | None) -> list[dict]:
        """Oldest first; ``before`` is a Lamport bound (exclusive) for paging backwards."""
        source = (self.channel_posts if kind == "channel" else self.user_messages).get(name)
        if source is None:
            return []
        items = source.items
        end = len(items)
        if before is not None:
            end = bisect_left(items, (before,), key=lambda x: x[0][:1])
        return [entry(op) for _, op in items[max(0, end - limit):end]]

    def snapshot(self) -> dict[str, list[dict]]:
        """The four data files' contents, in the total order."""
        users = []
        for first in self.users_order:
            logins = list(self.user_logins[first.fields["user"]])
            users.append({
                "user": first.fields["user"],
                "logins": [op.timestamp for op in logins],
                "login_ops": [{"id": op.id, "timestamp": op.timestamp, "clock": op.clock}
                              for op in logins],
            })
        return {
            "usuarios.json": users,
            "canais.json": [entry(op) for op in self.channels],
            "publicacoes.json": [entry(op) for op in self.posts],
            "mensagens.json": [entry(op) for op in self.messages],
        }


def entry(op: Op) -> dict[str, Any]:
    """One data-file entry (and one ``history`` item) for a visible operation."""
    d: dict[str, Any] = dict(op.fields)
    d["timestamp"] = op.timestamp
    d["clock"] = op.clock
    d["id"] = op.id
    return d


def ops_from_files(files: dict[str, Any]) -> Iterable[Op]:
    """Operations named by entries of (possibly restored) data files; entries without a
    usable id or clock are skipped by the caller's merge, as they cannot be placed."""
    kinds = {"canais.json": "channel", "publicacoes.json": "publish", "mensagens.json": "message"}
    for name, kind in kinds.items():
        for e in files.get(name) or []:
            op = _op_from_entry(kind, e, {k: e.get(k) for k in _FIELDS[kind]})
            if op is not None:
                yield op
    for e in files.get("usuarios.json") or []:
        if not isinstance(e, dict):
            continue
        for login in e.get("login_ops") or []:
            if isinstance(login, dict):
                op = _op_from_entry("login", login, {"user": e.get("user")})
                if op is not None:
                    yield op


_FIELDS = {"channel": ("channel",), "publish": ("user", "channel", "message"),
           "message": ("src", "dst", "message")}


def _op_from_entry(kind: str, e: Any, fields: dict[str, Any]) -> Op | None:
    if not isinstance(e, dict) or not all(isinstance(v, str) for v in fields.values()):
        return None
    try:
        origin, seq = parse_op_id(str(e.get("id", "")))
        return Op(origin, seq, int(e["clock"]), kind, float(e["timestamp"]), fields)
    except (KeyError, TypeError, ValueError):
        return None
