"""Bully election and Berkeley synchronisation against real daemons.

Run with ``-s`` to see the measured failover time and clock spreads."""

from __future__ import annotations

import time
from typing import Any

from bbd import auth
from bbd.client import Client, Subscriber
from bbd.localcluster import Cluster, wait_for


def _statuses(c: Cluster, names: list[str]) -> dict[str, dict[str, Any] | None]:
    return {n: c.status(n) for n in names}


def _agree_on(c: Cluster, names: list[str], coordinator: str) -> bool:
    return all(s is not None and s.get("coordinator") == coordinator
               for s in _statuses(c, names).values())


def _announcement(sub: Subscriber, timeout: float) -> str | None:
    got = sub.receive(timeout)
    if got is None:
        return None
    _, payload = got
    assert payload["service"] == "election"
    return payload["data"]["coordinator"]


def test_coordinator_failover_and_takeover(make_cluster: Any) -> None:
    c = make_cluster(servers=3)
    names = c.names()
    ranks = {n: c.status(n)["rank"] for n in names}
    by_rank = sorted(names, key=ranks.__getitem__, reverse=True)
    top, second = by_rank[0], by_rank[1]
    wait_for(lambda: _agree_on(c, names, top), 10, f"every server to follow {top}")

    sub = Subscriber(c.xpub, ["servers"])
    try:
        # The coordinator re-announces itself periodically: hearing it proves that our
        # subscription has reached the proxy before the clock starts.
        wait_for(lambda: _announcement(sub, 0.5) == top, 10, "a re-announcement of the top")
        c.kill(top)
        killed = time.monotonic()
        announced = None
        while time.monotonic() - killed < 10:
            announced = _announcement(sub, 0.5)
            if announced is not None and announced != top:
                break
        failover = time.monotonic() - killed
        assert announced == second, f"expected {second} announced, got {announced}"
        print(f"\nfailover: {top} killed -> {second} announced in {failover:.3f} s")
        assert failover < 3.0
        live = [n for n in names if n != top]
        wait_for(lambda: _agree_on(c, live, second), 5, f"live servers to follow {second}")

        restarted = time.monotonic()
        c.restart(top)
        wait_for(lambda: _announcement(sub, 0.5) == top, 10, f"{top} to announce itself again")
        print(f"takeover: {top} announced {time.monotonic() - restarted:.3f} s after its "
              "restart began (process start-up included)")
        wait_for(lambda: _agree_on(c, names, top), 10, f"every server to follow {top} again")
        s = c.status(top)
        assert s is not None and s["election_phase"] == "idle"
    finally:
        sub.close()


def _offsets(clients: dict[str, Client], last: dict[str, float]) -> dict[str, float]:
    """Each server's clock minus ours, corrected by half the round trip; also checks that
    no server's clock ever reads less than it did before."""
    out = {}
    for name, client in clients.items():
        t_send = time.time()
        reading = client.request("clock")["time"]
        t_recv = time.time()
        assert reading >= last.get(name, float("-inf")), f"{name}'s clock went backwards"
        last[name] = reading
        out[name] = reading + (t_recv - t_send) / 2 - t_recv
    return out


def _spread(offsets: dict[str, float]) -> float:
    return max(offsets.values()) - min(offsets.values())


def test_berkeley_brings_skewed_clocks_together(make_cluster: Any) -> None:
    c = make_cluster(skews=[-3, 0, 5])
    names = c.names()
    clients = {n: Client(c.sync_endpoint(n), timeout=1.0, retries=2,
                         security=auth.client_options(c.keys)) for n in names}
    traffic = c.client(timeout=2.0)
    last: dict[str, float] = {}
    try:
        before = _offsets(clients, last)
        assert _spread(before) > 5.0  # slewing takes seconds: still far apart at start

        def converged() -> bool:
            # Client messages drive rounds (every 10 a server handles), the timer too.
            for _ in range(10):
                traffic.request("channels")
            return all(_spread(_offsets(clients, last)) < 0.010 for _ in range(3))

        began = time.monotonic()
        wait_for(converged, 40, "clocks within 10 ms", interval=0.1)
        took = time.monotonic() - began
        after = [_spread(_offsets(clients, last)) for _ in range(20)]
        print(f"\nclock spread before {_spread(before):.3f} s "
              f"(offsets {', '.join(f'{n} {o:+.3f}' for n, o in before.items())}); "
              f"after {took:.1f} s: max {max(after) * 1000:.3f} ms "
              f"over {len(after)} samples")
        assert max(after) < 0.010
        statuses = _statuses(c, names)
        assert all(s is not None and s["last_sync"] is not None for s in statuses.values())
        coordinator = statuses[names[0]]["coordinator"]
        assert all(s["coordinator"] == coordinator for s in statuses.values())
    finally:
        traffic.close()
        for client in clients.values():
            client.close()
