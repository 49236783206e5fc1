"""The cyclic garbage collector held off while a server makes millions of long-lived
objects (a start replaying its journal, a new server taking the whole history).

Each collection scans every tracked object of the generations it collects, and objects
made by the million push collections of the oldest generation again and again: building
a million operations took 4 s with the collector and 2 s without. Once the objects are
made they are frozen (``gc.freeze``): later full collections skip them. Holds nest; the
collector runs again once the last one is released.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_holds = 0
_was_enabled = True


def hold() -> None:
    global _holds, _was_enabled
    if _holds == 0:
        _was_enabled = gc.isenabled()
        gc.disable()
    _holds += 1


def release(freeze: bool = False) -> None:
    """End a hold; ``freeze``: what exists now is long-lived (the collector skips it)."""
    global _holds
    if _holds == 0:
        return
    _holds -= 1
    if freeze:
        gc.freeze()
    if _holds == 0 and _was_enabled:
        gc.enable()


@contextmanager
def held(freeze: bool = False) -> Iterator[None]:
    hold()
    try:
        yield
    finally:
        release(freeze)
