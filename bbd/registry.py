"""The reference server's registry: unique, stable ranks and liveness by heartbeat.

Pure: callers pass ``now``. Ranks start at 1, are never reused, and the same name always
gets its rank back; ``entries()`` is what the service persists so this holds across its
own restarts.

A name belongs to the server that first registered it with a token (a secret the server
generates once and keeps in its data directory): its endpoints change only on a ``rank``
that presents the same token, so nobody else can redirect a name's traffic to themselves.
Only a hash of the token is kept. A name registered without a token (a server of another
team, or an entry persisted before tokens existed) is claimed by the first token shown.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Refused(Exception):
    """A registration that would take over a name that belongs to another server."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _owns(server: Server, token: str | None) -> bool:
    return bool(token) and server.token_hash is not None \
        and hmac.compare_digest(token_hash(token), server.token_hash)


@dataclass
class Server:
    name: str
    rank: int
    endpoints: dict[str, str] = field(default_factory=dict)
    token_hash: str | None = None  # sha256 of the owner's token; None: not claimed yet
    last_seen: float | None = None  # None: registered once, not heard from since we started


class Registry:
    def __init__(self, expiry: float, entries: list[dict[str, Any]] | None = None,
                 vouch: Callable[[str, str], bool] | None = None) -> None:
        """``vouch(name, token)``: True for a token that proves ``name`` by other means
        than the one first presented (derived from the board's keys): it takes the claim
        over, so a server that lost its data directory, or whose claim predates the keys,
        still gets its name back."""
        self.expiry = expiry
        self.vouch = vouch or (lambda name, token: False)
        self.servers: dict[str, Server] = {}
        for e in entries or []:
            s = Server(str(e["name"]), int(e["rank"]), dict(e.get("endpoints") or {}),
                       e.get("token_hash") if isinstance(e.get("token_hash"), str) else None)
            self.servers[s.name] = s

    def rank(self, name: str, endpoints: dict[str, str], now: float,
             token: str | None = None) -> tuple[int, bool]:
        """Register (or re-register) ``name``; returns its rank and whether the persisted
        entries changed. Raises Refused if the name belongs to a server with another token
        and the endpoints would change (same endpoints: harmless, the rank is returned)."""
        server = self.servers.get(name)
        changed = False
        presented = token_hash(token) if token else None
        if server is not None and server.token_hash is not None and not _owns(server, token):
            if token and self.vouch(name, token):
                server.token_hash = presented  # proved by the keys: the claim moves to it
                changed = True
            else:
                if endpoints and endpoints != server.endpoints:
                    raise Refused(f"name '{name}' is registered to another server")
                server.last_seen = now
                return server.rank, False
        if server is None:
            server = Server(name, max((s.rank for s in self.servers.values()), default=0) + 1)
            self.servers[name] = server
            changed = True
        if presented and server.token_hash is None:
            server.token_hash = presented
            changed = True
        if endpoints and endpoints != server.endpoints:
            server.endpoints = dict(endpoints)
            changed = True
        server.last_seen = now
        return server.rank, changed

    def heartbeat(self, name: str, now: float, token: str | None = None) -> bool:
        """False for a name never registered: the server must call ``rank`` again. Refused
        if the name is claimed and the token is not its owner's (nobody keeps a dead
        server listed in its place)."""
        server = self.servers.get(name)
        if server is None:
            return False
        self._check_owner(server, token, "heartbeat")
        server.last_seen = now
        return True

    def leave(self, name: str, token: str | None = None) -> bool:
        """A server stopping on purpose takes itself off the live list at once (it keeps
        its rank and endpoints). False if it was not live; Refused without its owner's
        token (nobody takes another server off the list)."""
        server = self.servers.get(name)
        if server is None:
            return False
        self._check_owner(server, token, "leave")
        was_live = server.last_seen is not None
        server.last_seen = None
        return was_live

    def _check_owner(self, server: Server, token: str | None, what: str) -> None:
        """Refused unless ``token`` is the claim's (or nobody claimed it, or the keys vouch
        for it, which moves the claim to it)."""
        if server.token_hash is None or _owns(server, token):
            return
        if token and self.vouch(server.name, token):
            server.token_hash = token_hash(token)
            return
        raise Refused(f"{what} for '{server.name}' without its owner's token")

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

    def registered(self) -> list[dict[str, Any]]:
        """Every server ever registered, live or not, with its endpoints: the origins a
        replica may meet, and the servers that may pull (a catching-up server may have
        missed its heartbeats)."""
        return [{"name": s.name, "rank": s.rank, **s.endpoints}
                for s in sorted(self.servers.values(), key=lambda s: s.rank)]

    def entries(self) -> list[dict[str, Any]]:
        return [{"name": s.name, "rank": s.rank, "endpoints": s.endpoints,
                 **({"token_hash": s.token_hash} if s.token_hash else {})}
                for s in sorted(self.servers.values(), key=lambda s: s.rank)]
