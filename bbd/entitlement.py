"""Which replicated operations a server believes, whoever sent them (pure).

Behind the authentication, and the only guard when it is off: an operation must come from a
known origin (a server the reference ever registered, or one already in the log), may never
replace a different operation under the same id, and a ``replicate`` (an origin pushing its
own new operations) must carry operations of one other origin whose sequence numbers follow
the ones held, with no gap: a forged future id would otherwise shadow the real operation
when it comes. Operations accepted but still on their way to the journal count as held: an
origin sends its next batch without waiting, and it must not be refused for a gap that is
only the previous batch's fsync. A peer that truly lacks earlier operations says where its
copy stops (``held_top``), and the origin sends them ahead of its batch. The field checks
(names, lengths, clock bounds) live in the board's own validation.
"""

from __future__ import annotations

from collections.abc import Collection

from bbd.state import Board, Op


def foreign_problem(op: Op, board: Board, known: Collection[str]) -> str | None:
    """Why an operation from a peer (pull page, competitor) must be refused, or None."""
    if op[1] not in known:
        return f"{op.id}: unknown origin '{op.origin}'"
    held = board.get(op[1], op[2])
    if held is not None and held != op:
        return f"{op.id}: differs from the operation held under that id"
    return None


def held_top(origin: str, board: Board, pending: Collection[str] = (), top: int = 0) -> int:
    """The highest sequence of ``origin`` (from ``top`` on) held or pending here with none
    missing below it: what a refused origin resends from to fill the gap."""
    top = max(top, board.vector.get(origin, 0))
    while f"{origin}:{top + 1}" in pending or f"{origin}:{top + 1}" in board.ops:
        top += 1
    return top


def replicate_problem(ops: list[Op], board: Board, own: str, known: Collection[str],
                      pending: Collection[str] = ()) -> str | None:
    """Why a ``replicate`` must be refused as a whole, or None. ``pending``: ids of
    operations accepted and not yet durable (so not yet in ``board``)."""
    origins = {op[1] for op in ops}
    if len(origins) > 1:
        return f"operations of several origins {sorted(origins)} in one replicate"
    if own in origins:
        return f"operations claiming to be ours ({own})"
    top = 0
    get = board.get
    for op in ops:
        origin, seq = op[1], op[2]
        if origin not in known:
            return f"{op.id}: unknown origin '{origin}'"
        held = get(origin, seq)
        if held is not None:
            if held != op:
                return f"{op.id}: differs from the operation held under that id"
            continue  # a resend of what we hold: idempotent
        if pending and op.id in pending:
            continue
        # The usual batch follows what is held, one by one: the next is top + 1.
        if seq != top + 1 or not top:
            top = held_top(origin, board, pending, top)
        if seq != top + 1:
            return f"{op.id}: sequence does not follow {origin}:{top}"
        top = seq
    return None
