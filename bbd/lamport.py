"""Lamport's logical clock: tick before every send, max() on every receive."""

from __future__ import annotations


class LamportClock:
    def __init__(self, start: int = 0) -> None:
        self.value = start

    def tick(self) -> int:
        """Advance for a send (or a local event) and return the stamp to carry."""
        self.value += 1
        return self.value

    def observe(self, received: int) -> int:
        """Merge a stamp seen on a received message."""
        if received > self.value:
            self.value = received
        return self.value
