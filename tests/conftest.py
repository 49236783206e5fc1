"""Shared fixtures. Nothing here imports txZMQ (it would install a reactor at collection)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from bbd.localcluster import Cluster


def _no_term_at_collection(self) -> None:
    """A context a test leaves behind (one that failed half way, a thread still holding a
    socket) must not be terminated by the garbage collector: term() blocks while any of
    its sockets is open, and would hang whichever later test the collection fell in. The
    process's exit frees it."""


zmq.Context.__del__ = _no_term_at_collection


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """One three-server cluster shared by tests that only add their own data."""
    root = Path(tempfile.mkdtemp(prefix="bbd-test-"))
    c = Cluster(root)
    try:
        yield c.start()
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator:
    """Private clusters for tests that kill, pause or restart daemons."""
    made: list[Cluster] = []

    def make(**kw) -> Cluster:
        c = Cluster(tmp_path / f"c{len(made)}", **kw)
        made.append(c)
        return c.start()

    yield make
    for c in made:
        c.stop()
