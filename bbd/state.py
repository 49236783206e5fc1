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
import sys
from bisect import bisect_left
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import compress, repeat
from operator import is_not, itemgetter
from typing import Annotated, Any, NamedTuple

import msgspec

from bbd.opkinds import KINDS, NAME_FIELDS
from bbd.protocol import MAX_CLOCK, MAX_ID, MAX_MESSAGE, is_count, name_problem, quote, text_problem

OrderKey = tuple[int, str, int]

# What each kind holds, shows, stores and publishes: bbd/opkinds.py.
_REQUIRED = {name: kind.fields for name, kind in KINDS.items()}
_NAMES = NAME_FIELDS  # field values that are names: interned, stored once
# Per kind, its uniqueness key besides the request id: (prefix, index in the Op tuple).
_UNIQUE = {name: (kind.unique + ":", 6 + kind.fields.index(kind.unique))
           for name, kind in KINDS.items() if kind.unique is not None}
_INTERNED = {kind: tuple(name in _NAMES for name in names) for kind, names in _REQUIRED.items()}
_PAD = {kind: (None,) * (3 - len(names)) for kind, names in _REQUIRED.items()}
_intern = sys.intern

# A tuple whose first items are the total order (clock, origin, seq): sorting, bisecting
# and comparing operations happen in C, with no order tuple kept per operation. The field
# values are stored inline (f1..f3, in _REQUIRED's order), not in a dict per operation.
_OpTuple = namedtuple("_OpTuple", "clock origin seq kind timestamp rid f1 f2 f3")


class Op(_OpTuple):
    """One operation: immutable, about 112 bytes plus its strings. Two distinct operations
    compare by their place in the total order; equal ones are the same write."""

    __slots__ = ()

    def __new__(cls, origin: str, seq: int, clock: int, kind: str, timestamp: float,
                fields: Mapping[str, str], rid: str | None = None) -> Op:
        names = _REQUIRED.get(kind)
        if names is None:
            raise ValueError(f"unknown operation kind {_short(kind)}")
        values = tuple(_intern(fields[n]) if interned else fields[n]
                       for n, interned in zip(names, _INTERNED[kind], strict=True))
        return tuple.__new__(cls, (clock, _intern(origin), seq, _intern(kind), timestamp, rid,
                                   *values, *_PAD[kind]))

    def __reduce__(self) -> tuple[Any, tuple[tuple[Any, ...]]]:
        # Copied and pickled as the tuple it is (``__new__`` takes the fields as a dict).
        return _op_of_items, (tuple(self),)

    @property
    def id(self) -> str:
        return f"{self[1]}:{self[2]}"

    @property
    def order(self) -> OrderKey:
        return self[:3]  # type: ignore[return-value]

    @property
    def fields(self) -> dict[str, str]:
        """A new dict each time: the operation itself cannot be changed through it."""
        names = _REQUIRED[self[3]]
        if len(names) == 1:
            return {names[0]: self[6]}
        return {names[0]: self[6], names[1]: self[7], names[2]: self[8]}

    def keys(self) -> list[str]:
        """The uniqueness keys this operation competes for (as names: ``channel:x``)."""
        keys = []
        unique = _UNIQUE.get(self[3])
        if unique is not None:
            keys.append(unique[0] + self[unique[1]])
        if self[5] is not None:
            keys.append("rid:" + self[5])
        return keys

    def __repr__(self) -> str:
        return (f"Op({self.origin!r}, {self.seq}, {self.clock}, {self.kind!r}, "
                f"{self.timestamp!r}, {self.fields!r}, {self.rid!r})")

    def to_dict(self) -> dict[str, Any]:
        clock, origin, seq, kind, timestamp, rid, f1, f2, f3 = self
        names = _REQUIRED[kind]
        d: dict[str, Any] = {
            "origin": origin, "seq": seq, "clock": clock, "kind": kind, "timestamp": timestamp,
            "fields": {names[0]: f1} if f2 is None
            else {names[0]: f1, names[1]: f2, names[2]: f3},
        }
        if rid is not None:
            d["rid"] = rid
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Op:
        """Rebuild an operation from a peer or a file; ValueError if malformed (a wrong
        type is refused, never coerced)."""
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
        problem = _name_problem(origin, "origin")
        if problem:
            raise ValueError(f"malformed operation: {problem}")
        required = _REQUIRED.get(kind)
        if required is None or fields.keys() != _REQUIRED_SETS[kind]:
            raise ValueError(f"malformed operation {origin}:{seq}: kind {_short(kind)} with "
                             f"fields {sorted(map(_short, fields))}")
        # Checked like a client's request: a peer (or a forger) gets no further than one.
        for name, value in fields.items():
            problem = (text_problem(value, name) if name == "message"
                       else _name_problem(value, name))
            if problem:
                raise ValueError(f"malformed operation {origin}:{seq}: {problem}")
        # What ``__new__`` makes of it, built here (most of a page's cost, at a catch-up).
        if len(required) == 3:  # publish and message: two names, then the text
            f1, f2, f3 = fields[required[0]], _intern(fields[required[1]]), fields[required[2]]
        else:
            f1, f2, f3 = fields[required[0]], None, None
        return tuple.__new__(cls, (clock, _intern(origin), seq, _KIND[kind], float(timestamp),
                                   rid, _intern(f1), f2, f3))

    @classmethod
    def from_journal(cls, d: Any) -> Op:
        """Rebuild an operation from this server's own journal. Every record there passed
        ``from_dict`` before it was written, and its line is CRC-checked, so the names and
        texts are not validated again (that is most of the cost of a start): only the
        types and ranges are, so that a record that is not an operation is refused with
        ValueError and can never break the board or the start. A record is a map (as
        ``to_dict`` makes it) or a row (the operation's tuple, as the journal writes an
        ``Op``)."""
        if type(d) is list or type(d) is tuple:
            d = _record_of_row(d)
        try:
            kind, fields = d["kind"], d["fields"]
            names = _REQUIRED[kind]
            origin, seq, clock, timestamp, rid = (d["origin"], d["seq"], d["clock"],
                                                  d["timestamp"], d.get("rid"))
            if len(names) == 3:
                f1, f2, f3 = fields[names[0]], fields[names[1]], fields[names[2]]
            else:
                f1, f2, f3 = fields[names[0]], "-", "-"
        except (KeyError, TypeError, AttributeError):
            raise ValueError("not an operation: missing or misshapen fields") from None
        tt = type(timestamp)
        if not (type(origin) is str and origin and type(seq) is int and 1 <= seq <= MAX_CLOCK
                and type(clock) is int and 0 <= clock <= MAX_CLOCK
                and (tt is float and math.isfinite(timestamp) or tt is int)
                and (rid is None or type(rid) is str and rid) and len(fields) == len(names)
                and type(f1) is str and f1 and type(f2) is str and f2 and type(f3) is str and f3):
            raise ValueError(f"not an operation: wrong types or values out of range in "
                             f"{_short(origin)}:{seq!r}")
        if len(names) == 3:  # publish and message: two names, then the text
            f2 = _intern(f2)
        else:
            f2 = f3 = None
        return tuple.__new__(cls, (clock, _intern(origin), seq, _KIND[kind], float(timestamp),
                                   rid, _intern(f1), f2, f3))


_KIND = {kind: _intern(kind) for kind in _REQUIRED}
_REQUIRED_SETS = {kind: frozenset(names) for kind, names in _REQUIRED.items()}


class _Wire(msgspec.Struct):
    """An operation as a peer sends it (``to_dict``), typed as ``from_dict`` checks it."""

    origin: str
    seq: Annotated[int, msgspec.Meta(ge=1, le=MAX_CLOCK)]
    clock: Annotated[int, msgspec.Meta(ge=0, le=MAX_CLOCK)]
    kind: str
    timestamp: float  # an int is taken (as from_dict takes it), a bool is not
    fields: dict[str, str]
    rid: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID)] | None = None


def ops_from_dicts(raw: list[Any]) -> list[Op]:
    """``[Op.from_dict(d) for d in raw]``: the same operations, or the same ValueError,
    for a pull page of maps (a peer that does not send rows). The types and ranges are
    checked by msgspec, then the page is checked as a page of rows (``ops_from_rows``'s
    C-level passes); any page where one check fails goes through ``from_dict`` one by
    one (which says why)."""
    fast = _ops_from_dicts(raw)
    return fast if fast is not None else [Op.from_dict(d) for d in raw]


def _ops_from_dicts(raw: list[Any]) -> list[Op] | None:
    try:
        wire = msgspec.convert(raw, list[_Wire])
    except msgspec.ValidationError:
        return None
    rows = []
    for w in wire:
        names = _REQUIRED.get(w.kind)
        if names is None or w.fields.keys() != _REQUIRED_SETS[w.kind]:
            return None
        f = w.fields
        f1, f2, f3 = (f[names[0]], f[names[1]], f[names[2]]) if len(names) == 3 \
            else (f[names[0]], None, None)
        rows.append((w.clock, w.origin, w.seq, w.kind, w.timestamp, w.rid, f1, f2, f3))
    return _ops_of_checked_rows(rows, wire=True)


def _record_of_row(row: list[Any] | tuple[Any, ...]) -> dict[str, Any]:
    """The map of a journal row ``[clock, origin, seq, kind, timestamp, rid, f1, f2, f3]``
    (f2 and f3 null for a kind of one field), for ``from_journal`` to check."""
    names = _REQUIRED.get(row[3]) if len(row) == 9 and isinstance(row[3], str) else None
    if names is None or len(names) == 1 and (row[7] is not None or row[8] is not None):
        raise ValueError("not an operation: a row of the wrong shape")
    return {"clock": row[0], "origin": row[1], "seq": row[2], "kind": row[3],
            "timestamp": row[4], "rid": row[5], "fields": dict(zip(names, row[6:], strict=False))}


# A journal record as ``Op.to_dict`` writes it, typed so that msgspec checks in C what
# ``Op.from_journal`` checks in Python (unknown keys are ignored there too).
_Nonempty = Annotated[str, msgspec.Meta(min_length=1)]


class _Record(msgspec.Struct):
    origin: _Nonempty
    seq: Annotated[int, msgspec.Meta(ge=1, le=MAX_CLOCK)]
    clock: Annotated[int, msgspec.Meta(ge=0, le=MAX_CLOCK)]
    kind: str
    timestamp: float  # JSON has no NaN or infinity, and msgspec refuses a bool here
    fields: dict[str, str]
    rid: _Nonempty | None = None


_RECORDS = msgspec.json.Decoder(list[_Record])


class _Row(NamedTuple):
    """A journal row (an ``Op`` as the journal writes it), typed likewise."""

    clock: Annotated[int, msgspec.Meta(ge=0, le=MAX_CLOCK)]
    origin: _Nonempty
    seq: Annotated[int, msgspec.Meta(ge=1, le=MAX_CLOCK)]
    kind: str
    timestamp: float
    rid: _Nonempty | None
    f1: _Nonempty
    f2: _Nonempty | None
    f3: _Nonempty | None


_ROWS = msgspec.json.Decoder(list[_Row])


def ops_from_json(array: bytes) -> list[Op] | None:
    """The operations of a JSON array of journal records (all maps, or all rows),
    decoded at C speed: what ``Op.from_journal`` makes of each, or None if any record
    is one it would refuse (the caller then takes the records one by one, and refuses
    only those)."""
    if array[1:2] == b"[":
        return _ops_of_rows(array)
    try:
        records = _RECORDS.decode(array)
    except msgspec.DecodeError:  # a ValidationError too
        return None
    out: list[Op] = []
    append, new, intern, kinds, required = out.append, tuple.__new__, _intern, _KIND, _REQUIRED
    try:
        for r in records:
            kind, f = kinds[r.kind], r.fields
            names = required[kind]
            if len(names) == 3:  # publish and message: two names, then the text
                f1, f2, f3 = f[names[0]], f[names[1]], f[names[2]]
                if len(f) != 3 or not (f1 and f2 and f3):
                    return None
                f2 = intern(f2)
            else:
                f1 = f[names[0]]
                if len(f) != 1 or not f1:
                    return None
                f2 = f3 = None
            append(new(Op, (r.clock, intern(r.origin), r.seq, kind, r.timestamp, r.rid,
                            intern(f1), f2, f3)))
    except KeyError:  # an unknown kind, or a field missing
        return None
    return out


def _ops_of_rows(array: bytes) -> list[Op] | None:
    """``ops_from_json`` for rows, as C-level passes over the block's columns (a Python
    loop per operation was most of the cost of a start)."""
    try:
        rows = _ROWS.decode(array)
    except msgspec.DecodeError:
        return None
    return _ops_of_checked_rows(rows, wire=False)


def _ops_of_checked_rows(rows: list[Any], wire: bool) -> list[Op] | None:
    """The operations of rows whose types msgspec checked: None if a row's kind is
    unknown or its fields do not fit it, or (``wire``: from a peer) if a name or a text
    is one a client could not send or a timestamp is not finite."""
    if not rows:
        return []
    clock, origin, seq, kind, timestamp, rid, f1, f2, f3 = zip(*rows, strict=True)
    try:
        kind = list(map(_KIND.__getitem__, kind))
    except KeyError:  # an unknown kind
        return None
    # A kind of three fields has f2 and f3, a kind of one has neither.
    three = list(map(_THREE.__getitem__, kind))
    if three != list(map(is_not, f2, repeat(None))) \
            or three != list(map(is_not, f3, repeat(None))):
        return None
    if wire:
        texts = [text for text in f3 if text is not None]
        if not all(map(str.strip, texts)) or max(map(len, texts), default=0) > MAX_MESSAGE \
                or any(_name_problem(name, "name") for name in {*origin, *f1, *f2} - {None}) \
                or not all(map(math.isfinite, timestamp)):
            return None
    return list(map(tuple.__new__, repeat(Op), zip(
        clock, _interned(origin), seq, kind, timestamp, rid, _interned(f1), _interned(f2),
        f3, strict=True)))


class _WireRow(NamedTuple):
    """An operation as a peer sends it in a row, typed as ``from_dict`` checks it."""

    clock: Annotated[int, msgspec.Meta(ge=0, le=MAX_CLOCK)]
    origin: str
    seq: Annotated[int, msgspec.Meta(ge=1, le=MAX_CLOCK)]
    kind: str
    timestamp: float
    rid: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID)] | None
    f1: str
    f2: str | None
    f3: str | None


def ops_from_rows(raw: list[Any]) -> list[Op]:
    """The operations of a pull page of rows (``tuple(op)``), checked exactly as
    ``Op.from_dict`` checks the same operation as a map: in C-level passes (msgspec for
    the types and ranges, each distinct name once, the texts as a column), and for any
    page where one check fails, each row as a map through ``from_dict`` (which says
    why)."""
    try:
        fast = _ops_of_checked_rows(msgspec.convert(raw, list[_WireRow]), wire=True)
    except msgspec.ValidationError:
        fast = None
    return fast if fast is not None else [Op.from_dict(_map_of_row(row)) for row in raw]


def _map_of_row(row: Any) -> dict[str, Any]:
    """A row from a peer as the map ``to_dict`` would make of it, for ``from_dict``."""
    if not isinstance(row, list | tuple) or len(row) != 9:
        raise ValueError("malformed operation: not a row of nine values")
    clock, origin, seq, kind, timestamp, rid, f1, f2, f3 = row
    names = _REQUIRED.get(kind) if isinstance(kind, str) else None
    if names is not None and len(names) == 1 and (f2 is not None or f3 is not None):
        raise ValueError(f"malformed operation: kind {_short(kind)} with three fields")
    values = (f1, f2, f3) if names is None or len(names) == 3 else (f1,)
    d = {"origin": origin, "seq": seq, "clock": clock, "kind": kind, "timestamp": timestamp,
         "fields": dict(zip(names or ("f1", "f2", "f3"), values, strict=True))}
    if rid is not None:
        d["rid"] = rid
    return d


_THREE = {kind: len(names) == 3 for kind, names in _REQUIRED.items()}


def _interned(column: tuple[str | None, ...]) -> Iterator[str | None]:
    """The names of a column, each the interned one (each distinct name looked up once)."""
    canon = {name: None if name is None else _intern(name) for name in set(column)}
    return map(canon.__getitem__, column)


def _op_of_items(items: tuple[Any, ...]) -> Op:
    return tuple.__new__(Op, items)

# Names that passed ``name_problem`` (whose answer depends on the name alone): the same few
# users, channels and origins come in every operation, and checking them character by
# character was most of the cost of taking an operation from a peer. Bounded: a peer
# sending endless new names only empties it.
_GOOD_NAMES: set[str] = set()
_GOOD_NAMES_MAX = 65536


def _name_problem(value: Any, what: str) -> str | None:
    if type(value) is str and value in _GOOD_NAMES:
        return None
    problem = name_problem(value, what)
    if problem is None and type(value) is str:
        if len(_GOOD_NAMES) >= _GOOD_NAMES_MAX:
            _GOOD_NAMES.clear()
        _GOOD_NAMES.add(value)
    return problem


def _short(value: Any) -> str:
    return quote(value) if isinstance(value, str) else type(value).__name__


def parse_op_id(op_id: str) -> tuple[str, int]:
    origin, _, seq = op_id.rpartition(":")
    if not origin or not seq.isdigit():
        raise ValueError(f"not an operation id: {op_id!r}")
    return origin, int(seq)


class _Sorted:
    """Operations kept sorted by their order (bisect in C: operations compare by order;
    appending is the common case). An operation that sorts before the last one waits in
    ``_late`` until the list is next read, and all those waiting are merged at once: a
    catch-up's pages come in (origin, seq) order, not in the total order, and inserting
    each one into a list of a million would move half of it every time.

    ``changed_from`` is a low-water mark: the lowest index whose item changed since the
    last ``take_changed``, so that the data files rewrite only from there on."""

    __slots__ = ("_items", "_late", "changed_from")

    def __init__(self, items: list[Op] | None = None) -> None:
        """``items``: already in order (a bulk load's), taken as they are."""
        self._items: list[Op] = items if items is not None else []
        self._late: list[Op] = []
        self.changed_from = 0

    @property
    def items(self) -> list[Op]:
        """The operations in order (late ones merged in first)."""
        if self._late:
            self._merge()
        return self._items

    def _merge(self) -> None:
        late, self._late = self._late, []
        late.sort()
        items = self._items
        i = bisect_left(items, late[0])
        self._changed(i)
        tail = items[i:]
        tail.extend(late)
        tail.sort()  # two sorted runs: a linear merge
        items[i:] = tail

    def add(self, op: Op) -> None:
        items = self._items
        if not self._late and (not items or items[-1] < op):
            self._changed(len(items))
            items.append(op)
        else:
            self._late.append(op)

    def extend(self, ops: list[Op]) -> None:
        """``add`` each of ``ops``, which are in order."""
        items = self._items
        if not self._late and ops and (not items or items[-1] < ops[0]):
            self._changed(len(items))
            items.extend(ops)
        else:
            self._late.extend(ops)

    def remove(self, op: Op) -> None:
        items = self.items
        i = bisect_left(items, op)
        if i < len(items) and items[i] is op:
            self._changed(i)
            del items[i]

    def first(self) -> Op | None:
        items = self.items
        return items[0] if items else None

    def touch(self, op: Op) -> None:
        """Mark the item of ``op`` changed (its entry shows more than the op itself)."""
        self._changed(bisect_left(self.items, op))

    def _changed(self, i: int) -> None:
        if i < self.changed_from:
            self.changed_from = i

    def take_changed(self) -> int:
        """The low-water mark since the last call, reset to the end of the list."""
        items = self.items
        low = min(self.changed_from, len(items))
        self.changed_from = len(items)
        return low

    def __len__(self) -> int:
        return len(self._items) + len(self._late)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.items)


class _Held(Mapping[str, Op]):
    """The operations a board holds, by id ("origin:seq"), read from its per-origin logs
    (no dict of id strings is kept)."""

    __slots__ = ("_board",)

    def __init__(self, board: Board) -> None:
        self._board = board

    def __getitem__(self, op_id: str) -> Op:
        try:
            origin, seq = parse_op_id(op_id)
        except (ValueError, AttributeError):
            raise KeyError(op_id) from None
        op = self._board.get(origin, seq)
        if op is None:
            raise KeyError(op_id)
        return op

    def __iter__(self) -> Iterator[str]:
        for op in self._board.held():
            yield op.id

    def __len__(self) -> int:
        return self._board.applied


class _Winners(Mapping[str, Op]):
    """The uniqueness winners under their key names (``channel:x``, ``rid:y``), read from
    the two dicts the board keeps by plain channel name and request id."""

    __slots__ = ("_board",)

    def __init__(self, board: Board) -> None:
        self._board = board

    def __getitem__(self, key: str) -> Op:
        kind, _, name = key.partition(":")
        table = {"channel": self._board.channel_winners, "rid": self._board.rid_winners}
        return table[kind][name] if kind in table else {}[key]

    def __iter__(self) -> Iterator[str]:
        yield from ("channel:" + name for name in self._board.channel_winners)
        yield from ("rid:" + rid for rid in self._board.rid_winners)

    def __len__(self) -> int:
        return len(self._board.channel_winners) + len(self._board.rid_winners)


class Board:
    def __init__(self, name: str) -> None:
        self.name = name
        # Uniqueness winners: the least operation holding a channel name / a request id.
        self.channel_winners: dict[str, Op] = {}
        self.rid_winners: dict[str, Op] = {}
        # Version vector: per origin, the highest sequence held with no gap below it.
        self.vector: dict[str, int] = {}
        # Per origin, the operations of sequences 1..vector[origin], at index seq - 1, and
        # those held above a gap (rare and transient: a peer's batch arriving out of order,
        # damage in the journal), by sequence.
        self._dense: dict[str, list[Op]] = {}
        self._beyond: dict[str, dict[int, Op]] = {}
        self.next_seq = 1
        # Derived, visible views.
        self.user_logins: dict[str, _Sorted] = {}
        self.users_order = _Sorted()  # each user's first login
        self.channels = _Sorted()
        self.channel_posts: dict[str, _Sorted] = {}
        self.posts = _Sorted()
        self.user_messages: dict[str, _Sorted] = {}
        self.messages = _Sorted()
        self.applied = 0
        # Per kind, the methods that enter it in its view and take it out (bbd/opkinds.py).
        self._shows = {name: getattr(self, "_show_" + kind.view) for name, kind in KINDS.items()}
        self._hides = {name: getattr(self, "_hide_" + kind.view) for name, kind in KINDS.items()}

    @property
    def ops(self) -> _Held:
        """Every held operation by id (a read-only view)."""
        return _Held(self)

    @property
    def winners(self) -> _Winners:
        """Uniqueness winners by key name (a read-only view)."""
        return _Winners(self)

    def get(self, origin: str, seq: int) -> Op | None:
        dense = self._dense.get(origin)
        if dense is None:
            return None
        if 1 <= seq <= len(dense):
            return dense[seq - 1]
        beyond = self._beyond.get(origin)
        return beyond.get(seq) if beyond else None

    def holds(self, op: Op) -> bool:
        """Whether an operation with ``op``'s id is held."""
        return self.get(op[1], op[2]) is not None

    def held(self) -> Iterator[Op]:
        for origin, dense in self._dense.items():
            yield from dense
            yield from self._beyond.get(origin, {}).values()

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
        op = Op(self.name, self.next_seq, clock, kind, timestamp, fields, rid)
        self.next_seq += 1
        return op

    def apply(self, op: Op) -> bool:
        """Add an operation to the set; False if it was already there."""
        if not self._track(op):
            return False
        self.applied += 1
        visible = True
        if op[3] == "channel":
            visible = self._compete(self.channel_winners, op[6], op)
        rid = op[5]
        if rid is not None:
            if rid not in self.rid_winners:  # the common case: a request id seen once
                self.rid_winners[rid] = op
            elif not self._compete(self.rid_winners, rid, op):
                visible = False
        if visible:
            self._show(op)
        return True

    def apply_many(self, ops: list[Op]) -> int:
        """``apply`` each operation (in bulk into an empty board: ``load``); how many were
        new."""
        before = self.applied
        if not before:
            self.load(ops)
        elif not self._apply_page(ops):
            apply = self.apply
            for op in ops:
                apply(op)
        return self.applied - before

    def _apply_page(self, ops: list[Op]) -> bool:
        """Apply a catch-up's usual page, in C-level passes: posts and private messages
        that follow what is held of each origin, with request ids never seen (so each is
        new and visible). False, and nothing done, for any other page."""
        if not ops or not {"publish", "message"}.issuperset(map(itemgetter(3), ops)):
            return False
        by_origin = _split(ops, 1)
        seq = itemgetter(2)
        for origin, group in by_origin.items():
            first = len(self._dense.get(origin, ())) + 1
            if origin in self._beyond \
                    or list(map(seq, group)) != list(range(first, first + len(group))):
                return False
        rid_ops = list(compress(ops, map(is_not, map(itemgetter(5), ops), repeat(None))))
        rids = list(map(itemgetter(5), rid_ops))
        if len(set(rids)) != len(rids) or not self.rid_winners.keys().isdisjoint(rids):
            return False
        for origin, group in by_origin.items():
            dense = self._dense.get(origin)
            if dense is None:
                dense = self._dense[origin] = []
            dense.extend(group)
            self.vector[origin] = len(dense)
            if origin == self.name:
                self.next_seq = max(self.next_seq, len(dense) + 1)
        self.rid_winners.update(zip(rids, rid_ops, strict=True))
        self.applied += len(ops)
        for kind, group in _split(ops, 3).items():
            group.sort()
            if kind == "publish":
                self.posts.extend(group)
                for channel, posts in _split(group, 7).items():
                    self.channel_posts.setdefault(channel, _Sorted()).extend(posts)
            else:
                self.messages.extend(group)
                for op in group:
                    for user in {op[6], op[7]}:
                        self.user_messages.setdefault(user, _Sorted()).add(op)
        return True

    def replay(self, records: Iterable[Any]) -> tuple[int, list[str]]:
        """Apply journal records (see ``Op.from_journal``; an ``Op`` is taken as it is):
        the highest Lamport clock among them, and why each refused record was refused."""
        ops, refused = ops_of_records(records)
        self.load(ops)
        return max((op[0] for op in ops), default=0), refused

    def load(self, ops: list[Op]) -> None:
        """Apply many operations: into an empty board (a start's journal) in bulk, with
        sorts and C-speed passes instead of the per-operation work of ``apply`` (3 s for
        a million); the board is the same either way. Operations that do not fill each
        origin's sequence from 1 (a gap, a repeat), or a board already holding some,
        take the one-by-one way."""
        if self.applied or self._beyond or not self._load_bulk(ops):
            for op in ops:
                self.apply(op)

    def _load_bulk(self, ops: list[Op]) -> bool:
        # Each step is a sort or a C-level pass over a column (itemgetter, compress):
        # a Python loop per operation costs about a second a million.
        by_origin = _split(ops, 1)
        seq = itemgetter(2)
        for dense in by_origin.values():
            if list(map(seq, dense)) != list(range(1, len(dense) + 1)):
                dense.sort(key=seq)  # journaled out of order (a gap filled later)
                if list(map(seq, dense)) != list(range(1, len(dense) + 1)):
                    return False
        everything = sorted(ops)  # the total order; the journal's is close to it
        by_kind = _split(everything, 3)
        # Uniqueness: the least operation holding a key wins. Built from the greatest to
        # the least, each key's last assignment is its winner.
        rid_ops = list(compress(everything, map(is_not, map(itemgetter(5), everything),
                                                repeat(None))))
        rids = dict(zip(map(itemgetter(5), reversed(rid_ops)), reversed(rid_ops), strict=True))
        channel_ops = by_kind.get("channel", [])
        channels = dict(zip(map(itemgetter(6), reversed(channel_ops)), reversed(channel_ops),
                            strict=True))
        if len(rids) < len(rid_ops) or len(channels) < len(channel_ops):
            by_kind = {kind: [op for op in kind_ops
                              if (op[5] is None or rids[op[5]] is op)
                              and (op[3] != "channel" or channels[op[6]] is op)]
                       for kind, kind_ops in by_kind.items()}
        self.rid_winners, self.channel_winners = rids, channels
        self._dense = by_origin
        self.vector = {origin: len(dense) for origin, dense in by_origin.items()}
        self.next_seq = max(self.next_seq, self.vector.get(self.name, 0) + 1)
        self.applied = len(ops)
        self._load_views({kind.view: by_kind.get(name, []) for name, kind in KINDS.items()})
        return True

    def _load_views(self, by_view: dict[str, list[Op]]) -> None:
        """Fill the (empty) views with their visible operations, each list in order."""
        posts, messages = by_view["posts"], by_view["messages"]
        self.posts = _Sorted(posts)
        self.channels = _Sorted(by_view["channels"])
        self.messages = _Sorted(messages)
        self.channel_posts = {name: _Sorted(items) for name, items in _split(posts, 7).items()}
        to_users: dict[str, list[Op]] = {}
        for op in messages:
            for user in {op[6], op[7]}:
                listed = to_users.get(user)
                if listed is None:
                    listed = to_users[user] = []
                listed.append(op)
        self.user_messages = {name: _Sorted(items) for name, items in to_users.items()}
        self.user_logins = {name: _Sorted(items)
                            for name, items in _split(by_view["users_order"], 6).items()}
        self.users_order = _Sorted(sorted(logins.items[0]
                                          for logins in self.user_logins.values()))

    def _track(self, op: Op) -> bool:
        """Record ``op`` in its origin's log and the vector; False if already held."""
        origin, seq = op[1], op[2]
        dense = self._dense.get(origin)
        if dense is None:
            dense = self._dense[origin] = []
            self.vector[origin] = 0
        top = len(dense)
        if seq <= top:
            return False
        if seq == top + 1:
            dense.append(op)
            beyond = self._beyond.get(origin)
            if beyond:
                nxt = beyond.pop(seq + 1, None)
                while nxt is not None:
                    dense.append(nxt)
                    nxt = beyond.pop(nxt[2] + 1, None)
                if not beyond:
                    del self._beyond[origin]
            self.vector[origin] = len(dense)
        else:
            beyond = self._beyond.setdefault(origin, {})
            if seq in beyond:
                return False
            beyond[seq] = op
        if origin == self.name and seq >= self.next_seq:
            self.next_seq = seq + 1
        return True

    def _compete(self, winners: dict[str, Op], key: str, op: Op) -> bool:
        """Enter ``op`` for ``key``; whether it holds the key now. A displaced holder that
        was visible is hidden."""
        holder = winners.get(key)
        if holder is None:
            winners[key] = op
            return True
        if op < holder:  # distinct ids: decided by (clock, origin, seq)
            shown = self.visible(holder)
            winners[key] = op
            if shown:
                self._hide(holder)
            return True
        return False

    def visible(self, op: Op) -> bool:
        if op[3] == "channel" and self.channel_winners.get(op[6]) is not op:
            return False
        return op[5] is None or self.rid_winners.get(op[5]) is op

    def _show(self, op: Op) -> None:
        """Enter a visible operation in the view its kind is shown in (bbd/opkinds.py)."""
        self._shows[op[3]](op)

    def _hide(self, op: Op) -> None:
        """Undo ``_show`` for an op that just lost a key to an earlier competitor."""
        self._hides[op[3]](op)

    def _show_posts(self, op: Op) -> None:
        self.posts.add(op)
        posts = self.channel_posts.get(op[7])
        if posts is None:
            posts = self.channel_posts[op[7]] = _Sorted()
        posts.add(op)

    def _hide_posts(self, op: Op) -> None:
        self.posts.remove(op)
        self.channel_posts[op[7]].remove(op)

    def _show_users_order(self, op: Op) -> None:
        user = op[6]
        logins = self.user_logins.get(user)
        if logins is None:
            logins = self.user_logins[user] = _Sorted()
        first = logins.first()
        logins.add(op)
        if first is None or op < first:
            if first is not None:
                self.users_order.remove(first)
            self.users_order.add(op)
        else:
            self.users_order.touch(first)  # the user's entry lists one more login

    def _hide_users_order(self, op: Op) -> None:
        user = op[6]
        logins = self.user_logins[user]
        first = logins.first()
        logins.remove(op)
        if first is op:
            self.users_order.remove(op)
            nxt = logins.first()
            if nxt is None:
                del self.user_logins[user]
            else:
                self.users_order.add(nxt)
        else:
            self.users_order.touch(first)

    def _show_channels(self, op: Op) -> None:
        self.channels.add(op)

    def _hide_channels(self, op: Op) -> None:
        self.channels.remove(op)

    def _show_messages(self, op: Op) -> None:
        self.messages.add(op)
        for user in {op[6], op[7]}:
            self.user_messages.setdefault(user, _Sorted()).add(op)

    def _hide_messages(self, op: Op) -> None:
        self.messages.remove(op)
        for user in {op[6], op[7]}:
            self.user_messages[user].remove(op)

    # -- results and replication -----------------------------------------------------

    def by_rid(self, rid: str) -> Op | None:
        return self.rid_winners.get(rid)

    def outcome(self, op: Op) -> str | None:
        """None if ``op`` took effect, else why not (the client's ``erro`` text).
        A request-id loser answers as its winner did."""
        if op.rid is not None:
            winner = self.rid_winners.get(op.rid)
            if winner is not None and winner is not op:
                op = winner
        if op.kind == "channel" and self.channel_winners.get(op.f1) is not op:
            return "channel already exists"
        return None

    def competitors(self, op: Op) -> list[Op]:
        """Operations held here that beat ``op`` on one of its keys (sent back in acks)."""
        out = []
        for winners, key in ((self.channel_winners, op.f1 if op.kind == "channel" else None),
                             (self.rid_winners, op.rid)):
            holder = winners.get(key) if key is not None else None
            if holder is not None and holder is not op and holder.order < op.order:
                out.append(holder)
        return out

    def missing_for(self, vector: dict[str, int], limit: int,
                    after: tuple[str, int] | None = None) -> tuple[list[Op], bool]:
        """Operations a peer with ``vector`` lacks, in (origin, seq) order, starting past
        the cursor ``after`` (the last one of the previous page); the bool says whether
        more remain beyond ``limit``. The cursor lets a peer page past operations it
        already holds beyond a gap, instead of being sent the same page again. The cost
        is that of the page (plus the operations held above gaps), not of the history."""
        out: list[Op] = []
        for origin in sorted(self._dense):
            if after is not None and origin < after[0]:
                continue
            floor = vector.get(origin, 0)
            if after is not None and origin == after[0]:
                floor = max(floor, after[1])
            dense = self._dense[origin]
            if floor < len(dense):
                if len(out) >= limit:
                    return out, True
                room = limit - len(out)
                out.extend(dense[floor:floor + room])
                if len(dense) - floor > room:
                    return out, True
            beyond = self._beyond.get(origin)
            if beyond:
                for seq in sorted(s for s in beyond if s > floor):
                    if len(out) >= limit:
                        return out, True
                    out.append(beyond[seq])
        return out, False

    # -- reading ---------------------------------------------------------------------

    def has_channel(self, name: str) -> bool:
        return name in self.channel_winners

    def has_user(self, name: str) -> bool:
        return name in self.user_logins

    def user_list(self) -> list[str]:
        return [op.f1 for op in self.users_order]

    def channel_list(self) -> list[str]:
        return [op.f1 for op in self.channels]

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
        return [entry(op) for op in items[max(0, end - limit):end]]

    def views(self) -> Views:
        """Shallow copies of the visible views (C-speed list copies of immutable ops),
        so that rendering the files can happen off the reactor while writes go on."""
        return Views(
            users=[self.user_logins[first.f1].items[:] for first in self.users_order],
            channels=self.channels.items[:], posts=self.posts.items[:],
            messages=self.messages.items[:])

    def snapshot(self) -> dict[str, list[dict]]:
        """The four data files' contents, in the total order."""
        return self.views().render()


def ops_of_records(records: Iterable[Any]) -> tuple[list[Op], list[str]]:
    """The operations of journal records (``Op.from_journal``; an ``Op`` is taken as it
    is), and why each refused record was refused."""
    ops: list[Op] = []
    refused: list[str] = []
    append, make = ops.append, Op.from_journal
    for record in records:
        if type(record) is Op:
            append(record)
            continue
        try:
            append(make(record))
        except ValueError as e:
            refused.append(str(e))
    return ops, refused


def read_journal(journal: Any) -> tuple[Any, list[Op], list[str]]:
    """A journal's operations as a start reads them (``journal``: a ``store.Journal``):
    each block of well-formed records decoded in C (``ops_from_json``), any other block
    record by record (``Op.from_journal``). What ``load`` found (torn tail, damage, how
    many maps), the operations, and why each refused record was refused."""
    ops: list[Op] = []
    refused: list[str] = []

    def take(records: list[Any]) -> None:
        if records and type(records[0]) is Op:  # a block ops_from_json decoded: all are
            ops.extend(records)
            return
        block, why = ops_of_records(records)
        ops.extend(block)
        refused.extend(why)

    return journal.load(take, decode=ops_from_json), ops, refused


def _split(ops: list[Op], index: int) -> dict[str, list[Op]]:
    """``ops`` by the value of item ``index``, each list in the order of ``ops`` (one
    pass: faster than a C-level pass per value from three values on)."""
    out: dict[str, list[Op]] = {}
    for op in ops:
        key = op[index]
        group = out.get(key)
        if group is None:
            group = out[key] = []
        group.append(op)
    return out


def _order(op: Op) -> OrderKey:
    return op[:3]  # type: ignore[return-value]


@dataclass(frozen=True)
class Views:
    users: list[list[Op]]  # each user's logins, by first login
    channels: list[Op]
    posts: list[Op]
    messages: list[Op]

    def render(self) -> dict[str, list[dict]]:
        """Each kind's data file (bbd/opkinds.py): one entry per visible operation, or per
        user for logins (a user's entry lists its logins)."""
        views = {"users_order": self.users, "channels": self.channels, "posts": self.posts,
                 "messages": self.messages}
        out: dict[str, list[dict]] = {}
        for kind in KINDS.values():
            items = views[kind.view]
            out[kind.data_file] = ([user_entry(logins) for logins in items] if kind.by_user
                                   else [entry(op, rid=True) for op in items])
        return out


def user_entry(logins: list[Op]) -> dict[str, Any]:
    """A user's data-file entry: its logins, first to last."""
    return {"user": logins[0].f1,
            "logins": [op.timestamp for op in logins],
            "login_ops": [_login_entry(op) for op in logins]}


def _login_entry(op: Op) -> dict[str, Any]:
    d: dict[str, Any] = {"id": op.id, "timestamp": op.timestamp, "clock": op.clock}
    if op.rid is not None:
        d["rid"] = op.rid
    return d


def entry(op: Op, rid: bool = False) -> dict[str, Any]:
    """One ``history`` item, or with ``rid`` one data-file entry: the request id goes to
    the files so that a board rebuilt from them still spots a retried request."""
    d: dict[str, Any] = op.fields  # a new dict
    d["timestamp"] = op.timestamp
    d["clock"] = op.clock
    d["id"] = op.id
    if rid and op.rid is not None:
        d["rid"] = op.rid
    return d


def ops_from_files(files: dict[str, Any],
                   held: Callable[[str, int], Any] | None = None) -> Iterator[Op]:
    """Operations named by the entries of (possibly restored) data files. Entries that are
    not maps, or lack a usable id, clock or fields, cannot be placed and are skipped; so
    are those whose id ``held(origin, seq)`` says is held already (they would be ignored:
    a start finds its own files of a million posts, and checking each entry as an
    operation took seconds on the reactor)."""
    per_user = [kind for kind in KINDS.values() if kind.by_user]
    for kind in KINDS.values():
        if kind.by_user:
            continue
        for e in _list(files.get(kind.data_file)):
            if isinstance(e, dict):
                op = _op_from_entry(kind.name, e, {k: e.get(k) for k in kind.fields}, held)
                if op is not None:
                    yield op
    for kind in per_user:  # a user's entry: {"user", "login_ops": [{"id", ...}, ...]}
        for e in _list(files.get(kind.data_file)):
            if not isinstance(e, dict):
                continue
            for login in _list(e.get("login_ops")):
                if isinstance(login, dict):
                    op = _op_from_entry(kind.name, login, {"user": e.get("user")}, held)
                    if op is not None:
                        yield op


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _op_from_entry(kind: str, e: dict[str, Any], fields: dict[str, Any],
                   held: Callable[[str, int], Any] | None = None) -> Op | None:
    try:
        origin, seq = parse_op_id(str(e.get("id", "")))
        if held is not None and held(origin, seq):
            return None
        return Op.from_dict({"origin": origin, "seq": seq, "clock": e.get("clock"),
                             "kind": kind, "timestamp": e.get("timestamp"), "fields": fields,
                             "rid": e.get("rid")})
    except ValueError:
        return None
