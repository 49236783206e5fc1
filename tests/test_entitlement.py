"""bbd.entitlement: which replicated operations a server believes, whoever sent them."""

from __future__ import annotations

from bbd.entitlement import foreign_problem, replicate_problem
from bbd.state import Board, Op

KNOWN = {"s1", "s2", "s3"}


def ch(origin: str, seq: int, name: str, clock: int = 5) -> Op:
    return Op(origin, seq, clock, "channel", 0.0, {"channel": name})


def board_with(*ops: Op) -> Board:
    b = Board("s1")
    for op in ops:
        b.apply(op)
    return b


def test_the_next_operations_of_a_known_origin_are_believed() -> None:
    b = board_with(ch("s2", 1, "a"))
    assert replicate_problem([ch("s2", 2, "b"), ch("s2", 3, "c")], b, "s1", KNOWN) is None
    assert replicate_problem([ch("s2", 1, "a"), ch("s2", 2, "b")], b, "s1", KNOWN) is None


def test_unknown_origin_is_refused() -> None:
    b = board_with()
    assert "unknown origin" in replicate_problem([ch("evil", 1, "x")], b, "s1", KNOWN)
    assert "unknown origin" in foreign_problem(ch("evil", 1, "x"), b, KNOWN)


def test_a_gap_or_a_far_future_seq_is_refused() -> None:
    b = board_with(ch("s2", 1, "a"))
    for seq in (3, 10**12):
        assert "does not follow s2:1" in replicate_problem([ch("s2", seq, "x")], b, "s1", KNOWN)


def test_a_batch_still_on_its_way_to_the_journal_is_no_gap() -> None:
    # The origin sends its next replicate without waiting for the previous one's fsync here.
    b = board_with(ch("s2", 1, "a"))
    pending = {"s2:2", "s2:3"}
    assert replicate_problem([ch("s2", 4, "d")], b, "s1", KNOWN, pending) is None
    assert replicate_problem([ch("s2", 3, "c"), ch("s2", 4, "d")], b, "s1", KNOWN,
                             pending) is None
    assert "does not follow s2:3" in replicate_problem([ch("s2", 5, "e")], b, "s1", KNOWN,
                                                       pending)


def test_operations_in_our_own_name_are_refused() -> None:
    b = board_with(ch("s1", 1, "a"))
    assert "ours" in replicate_problem([ch("s1", 2, "x")], b, "s1", KNOWN)


def test_mixed_origins_in_one_replicate_are_refused() -> None:
    b = board_with()
    assert "several origins" in replicate_problem([ch("s2", 1, "a"), ch("s3", 1, "b")], b,
                                                  "s1", KNOWN)


def test_replacing_a_held_operation_is_refused_everywhere() -> None:
    held = ch("s2", 1, "geral", clock=40)
    forged = ch("s2", 1, "geral", clock=0)  # same id, earlier clock: would win the name
    b = board_with(held)
    assert "differs" in replicate_problem([forged], b, "s1", KNOWN)
    assert "differs" in foreign_problem(forged, b, KNOWN)
    assert foreign_problem(held, b, KNOWN) is None  # a resend is fine
