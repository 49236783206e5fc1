"""bbd.lamport.LamportClock: tick before every send, max() on every receive."""

from __future__ import annotations

import pytest

from bbd.lamport import LamportClock


def test_starts_at_zero_or_the_given_value() -> None:
    assert LamportClock().value == 0
    assert LamportClock(41).tick() == 42


def test_tick_increments_and_returns_the_stamp() -> None:
    c = LamportClock()
    assert [c.tick() for _ in range(3)] == [1, 2, 3] and c.value == 3


@pytest.mark.parametrize("start,received,after", [(5, 9, 9), (5, 5, 5), (5, 2, 5), (0, 0, 0)])
def test_observe_takes_the_max(start: int, received: int, after: int) -> None:
    c = LamportClock(start)
    assert c.observe(received) == after and c.value == after


def test_reply_after_receive_is_later_than_both() -> None:
    server, client = LamportClock(3), LamportClock()
    stamp = client.tick()
    for _ in range(4):
        stamp = client.tick()
    server.observe(stamp)
    reply = server.tick()
    assert reply == 6 and reply > stamp
    client.observe(reply)
    assert client.tick() == 7
