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

import math
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bbd.protocol import MAX_ID, is_count, name_problem, quote, text_problem

OrderKey = tuple[int, str, int]


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
        """Rebuild an operation from the journal or a peer; ValueError if malformed (a
        wrong type is refused, never coerced)."""
        try:
            origin, seq, clock, kind = d["origin"], d["seq"], d["clock"], d["kind"]
            timestamp, fields, rid = d["timestamp"], d["fields"], d.get("rid")
        except (KeyError, TypeError):
            raise ValueError("malformed operation: missing fields") from None
        if not (isinstance(origin, str) and is_count(seq) and seq >= 1 and is_count(clock)
                and isinstance(kind, str) and isinstance(fields, dict)
                and isinstance(timestamp, int | float) and not isinstance(timestamp, bool)
                and math.isfinite(timestamp)
                and (rid is None or isinstance(rid, str) and 0 < len(rid) <= MAX_ID)):
            raise ValueError("malformed operation: wrong field types or values out of range")
        problem = name_problem(origin, "origin")
        if problem:
            raise ValueError(f"malformed operation: {problem}")
        required = _REQUIRED.get(kind)
        if required is None or set(fields) != set(required):
            raise ValueError(f"malformed operation {origin}:{seq}: kind {_short(kind)} with "
                             f"fields {sorted(map(_short, fields))}")
        # Checked like a client's request: a peer (or a forger) gets no further than one.
        for name, value in fields.items():
            problem = (text_problem(value, name) if name == "message"
                       else name_problem(value, name))
            if problem:
                raise ValueError(f"malformed operation {origin}:{seq}: {problem}")
        return cls(origin, seq, clock, kind, float(timestamp), dict(fields), rid)


_REQUIRED = {"login": ("user",), "channel": ("channel",),
             "publish": ("user", "channel", "message"), "message": ("src", "dst", "message")}


def _short(value: Any) -> str:
    return quote(value) if isinstance(value, str) else type(value).__name__


def parse_op_id(op_id: str) -> tuple[str, int]:
    origin, _, seq = op_id.rpartition(":")
    if not origin or not seq.isdigit():
        raise ValueError(f"not an operation id: {op_id!r}")
    return origin, int(seq)


def _order(item: tuple[OrderKey, Op]) -> OrderKey:
    return item[0]


@dataclass
class _Sorted:
    """A list kept sorted by operation order (bisect; cheap for the append-mostly case).

    ``changed_from`` is a low-water mark: the lowest index whose item changed since the
    last ``take_changed``, so that the data files rewrite only from there on."""

    items: list[tuple[OrderKey, Op]] = field(default_factory=list)
    changed_from: int = 0

    def add(self, op: Op) -> None:
        item = (op.order, op)
        if not self.items or self.items[-1][0] < op.order:
            self._changed(len(self.items))
            self.items.append(item)
        else:
            i = bisect_left(self.items, op.order, key=_order)
            self._changed(i)
            self.items.insert(i, item)

    def remove(self, op: Op) -> None:
        i = bisect_left(self.items, op.order, key=_order)
        if i < len(self.items) and self.items[i][1] is op:
            self._changed(i)
            del self.items[i]

    def touch(self, op: Op) -> None:
        """Mark the item of ``op`` changed (its entry shows more than the op itself)."""
        self._changed(bisect_left(self.items, op.order, key=_order))

    def _changed(self, i: int) -> None:
        if i < self.changed_from:
            self.changed_from = i

    def take_changed(self) -> int:
        """The low-water mark since the last call, reset to the end of the list."""
        low = min(self.changed_from, len(self.items))
        self.changed_from = len(self.items)
        return low

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
            if not self.has_user(fields["user"]):
                return f"user '{fields['user']}' has not logged in"
        if kind == "message":
            for role in ("src", "dst"):
                if not self.has_user(fields[role]):
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
            else:
                self.users_order.touch(first)  # the user's entry lists one more login
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
            else:
                self.users_order.touch(first)
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

    def missing_for(self, vector: dict[str, int], limit: int,
                    after: tuple[str, int] | None = None) -> tuple[list[Op], bool]:
        """Operations a peer with ``vector`` lacks, in (origin, seq) order, starting past
        the cursor ``after`` (the last one of the previous page); the bool says whether
        more remain beyond ``limit``. The cursor lets a peer page past operations it
        already holds beyond a gap, instead of being sent the same page again."""
        out: list[Op] = []
        for origin in sorted(self._by_origin):
            if after is not None and origin < after[0]:
                continue
            floor = vector.get(origin, 0)
            if after is not None and origin == after[0]:
                floor = max(floor, after[1])
            held = self._by_origin[origin]
            if self.vector.get(origin, 0) <= floor and not self._beyond.get(origin):
                continue
            for seq in sorted(s for s in held if s > floor):
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

    def history(self, kind: str, name: str, limit: int, before: str | None) -> list[dict]:
        """The last ``limit`` items, oldest first. ``before`` is the id of an item already
        seen (the oldest of the previous page): only items before it in the total order
        are returned, so paging backwards never skips or repeats one. ValueError for an
        unknown id."""
        end_key: OrderKey | None = None
        if before is not None:
            cursor = self.ops.get(before)
            if cursor is None:
                raise ValueError(f"unknown operation id {before!r} in 'before'")
            end_key = cursor.order
        source = (self.channel_posts if kind == "channel" else self.user_messages).get(name)
        if source is None:
            return []
        items = source.items
        end = len(items) if end_key is None else bisect_left(items, end_key, key=_order)
        return [entry(op) for _, op in items[max(0, end - limit):end]]

    def views(self) -> Views:
        """Shallow copies of the visible views (C-speed list copies of immutable ops),
        so that rendering the files can happen off the reactor while writes go on."""
        return Views(
            users=[self.user_logins[first.fields["user"]].items[:] for first in self.users_order],
            channels=self.channels.items[:], posts=self.posts.items[:],
            messages=self.messages.items[:])

    def snapshot(self) -> dict[str, list[dict]]:
        """The four data files' contents, in the total order."""
        return self.views().render()


@dataclass(frozen=True)
class Views:
    users: list[list[tuple[OrderKey, Op]]]  # each user's logins, by first login
    channels: list[tuple[OrderKey, Op]]
    posts: list[tuple[OrderKey, Op]]
    messages: list[tuple[OrderKey, Op]]

    def render(self) -> dict[str, list[dict]]:
        return {
            "usuarios.json": [{"user": logins[0][1].fields["user"],
                               "logins": [op.timestamp for _, op in logins],
                               "login_ops": [_login_entry(op) for _, op in logins]}
                              for logins in self.users],
            "canais.json": [entry(op, rid=True) for _, op in self.channels],
            "publicacoes.json": [entry(op, rid=True) for _, op in self.posts],
            "mensagens.json": [entry(op, rid=True) for _, op in self.messages],
        }


def _login_entry(op: Op) -> dict[str, Any]:
    d: dict[str, Any] = {"id": op.id, "timestamp": op.timestamp, "clock": op.clock}
    if op.rid is not None:
        d["rid"] = op.rid
    return d


def entry(op: Op, rid: bool = False) -> dict[str, Any]:
    """One ``history`` item, or with ``rid`` one data-file entry: the request id goes to
    the files so that a board rebuilt from them still spots a retried request."""
    d: dict[str, Any] = dict(op.fields)
    d["timestamp"] = op.timestamp
    d["clock"] = op.clock
    d["id"] = op.id
    if rid and op.rid is not None:
        d["rid"] = op.rid
    return d


def ops_from_files(files: dict[str, Any]) -> Iterator[Op]:
    """Operations named by the entries of (possibly restored) data files. Entries that are
    not maps, or lack a usable id, clock or fields, cannot be placed and are skipped."""
    kinds = {"canais.json": "channel", "publicacoes.json": "publish", "mensagens.json": "message"}
    for name, kind in kinds.items():
        for e in _list(files.get(name)):
            if isinstance(e, dict):
                op = _op_from_entry(kind, e, {k: e.get(k) for k in _REQUIRED[kind]})
                if op is not None:
                    yield op
    for e in _list(files.get("usuarios.json")):
        if not isinstance(e, dict):
            continue
        for login in _list(e.get("login_ops")):
            if isinstance(login, dict):
                op = _op_from_entry("login", login, {"user": e.get("user")})
                if op is not None:
                    yield op


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _op_from_entry(kind: str, e: dict[str, Any], fields: dict[str, Any]) -> Op | None:
    try:
        origin, seq = parse_op_id(str(e.get("id", "")))
        return Op.from_dict({"origin": origin, "seq": seq, "clock": e.get("clock"),
                             "kind": kind, "timestamp": e.get("timestamp"), "fields": fields,
                             "rid": e.get("rid")})
    except ValueError:
        return None
