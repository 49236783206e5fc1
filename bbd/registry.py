"""The reference server's registry: unique, stable ranks and liveness by heartbeat.

Pure: callers pass ``now``. Ranks start at 1, are never reused, and the same name always
gets its rank back; ``entries()`` is what the service persists so this holds across its
own restarts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Server:
    name: str
    rank: int
    endpoints: dict[str, str] = field(default_factory=dict)
    last_seen: float | None = None  # None: registered once, not heard from since we started


class Registry:
    def __init__(self, expiry: float, entries: list[dict[str, Any]] | None = None) -> None:
        self.expiry = expiry
        self.servers: dict[str, Server] = {}
        for e in entries or []:
            s = Server(str(e["name"]), int(e["rank"]), dict(e.get("endpoints") or {}))
            self.servers[s.name] = s

    def rank(self, name: str, endpoints: dict[str, str], now: float) -> tuple[int, bool]:
        """Register (or re-register) ``name``; returns its rank and whether the persisted
        entries changed."""
        server = self.servers.get(name)
        changed = False
        if server is None:
            server = Server(name, max((s.rank for s in self.servers.values()), default=0) + 1)
            self.servers[name] = server
            changed = True
        if endpoints and endpoints != server.endpoints:
            server.endpoints = dict(endpoints)
            changed = True
        server.last_seen = now
        return server.rank, changed

    def heartbeat(self, name: str, now: float) -> bool:
        """False for a name never registered: the server must call ``rank`` again."""
        server = self.servers.get(name)
        if server is None:
            return False
        server.last_seen = now
        return True

    def is_live(self, server: Server, now: float) -> bool:
        return server.last_seen is not None and now - server.last_seen <= self.expiry

    def live(self, now: float) -> list[dict[str, Any]]:
        out = []
        for s in sorted(self.servers.values(), key=lambda s: s.rank):
            if self.is_live(s, now):
                out.append({"name": s.name, "rank": s.rank, **s.endpoints})
        return out

    def expire(self, now: float) -> list[Server]:
        """Servers that just went silent; each is reported once."""
        gone = [s for s in self.servers.values()
                if s.last_seen is not None and now - s.last_seen > self.expiry]
        for s in gone:
            s.last_seen = None
        return gone

    def entries(self) -> list[dict[str, Any]]:
        return [{"name": s.name, "rank": s.rank, "endpoints": s.endpoints}
                for s in sorted(self.servers.values(), key=lambda s: s.rank)]
