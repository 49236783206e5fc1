"""Shared fixtures. Nothing here imports txZMQ (it would install a reactor at collection)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bbd.localcluster import Cluster


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
