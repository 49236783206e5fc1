"""Concurrent clients that record every request: what was asked (with its request id), when,
and how it ended: acknowledged, refused (``erro``) or timed out (no answer after every
retry; it may or may not have been applied)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bbd.client import Client, Unavailable

ACKED, REFUSED, TIMED_OUT = "acknowledged", "refused", "timed out"
WRITES = ("login", "channel", "publish", "message")
# Clients create channels from a pool of names shared by all, so that names collide on
# purpose; the pool is renewed every POOL_SECONDS, so that creations keep racing for free
# names through a long run instead of all being refused once the first pool is taken.
CHANNEL_POOL = 24
POOL_SECONDS = 30.0
FIRST_CHANNEL = "geral"


@dataclass
class Request:
    client: str
    rid: str
    service: str
    fields: dict[str, Any]
    start: float  # seconds since the load began
    end: float
    outcome: str
    status: str | None = None
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class Record:
    """Every request of every client, thread-safe."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.requests: list[Request] = []
        self.lock = threading.Lock()

    def call(self, client: Client, who: str, rid: str, service: str,
             fields: dict[str, Any]) -> Request:
        start = self.clock()
        try:
            reply = client.request(service, dict(fields), rid=rid)
        except Unavailable:
            req = Request(who, rid, service, fields, start, self.clock(), TIMED_OUT)
        else:
            status = reply.get("status")
            ok = status in ("OK", "sucesso") or (service == "history" and "messages" in reply)
            req = Request(who, rid, service, fields, start, self.clock(),
                          ACKED if ok else REFUSED, status,
                          None if ok else str(reply.get("description", reply)))
        with self.lock:
            self.requests.append(req)
        return req

    def snapshot(self) -> list[Request]:
        with self.lock:
            return list(self.requests)


class Workload:
    """``clients`` threads, each with its own user and a seeded stream of operations:
    mostly posts, then private messages, channel creations from a small pool of names,
    reads of a channel's history, and logins again."""

    def __init__(self, record: Record, frontends: list[str], seed: int,
                 timeout: float = 1.0, retries: int = 3) -> None:
        self.record = record
        self.frontends = frontends  # client k talks to frontends[k % len]
        self.seed = seed
        self.timeout, self.retries = timeout, retries
        self.users = [f"c{k}" for k in range(1, len(frontends) + 1)]
        self.channels = {FIRST_CHANNEL}  # names known to exist
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def setup(self) -> None:
        """Every user logged in and the first channel created, before any fault."""
        c = Client(self.frontends[0], timeout=2.0, retries=10)
        for k, user in enumerate(self.users):
            req = self.record.call(c, "setup", f"{self.seed}-setup-{k}", "login",
                                   {"user": user})
            if req.outcome != ACKED:
                raise RuntimeError(f"setup failed: {req}")
        req = self.record.call(c, "setup", f"{self.seed}-setup-channel", "channel",
                               {"channel": FIRST_CHANNEL})
        if req.outcome != ACKED:
            raise RuntimeError(f"setup failed: {req}")
        c.close()

    def start(self) -> None:
        for k, user in enumerate(self.users):
            t = threading.Thread(target=self._run, args=(k, user), name=f"client-{user}",
                                 daemon=True)
            self.threads.append(t)
            t.start()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def _run(self, k: int, user: str) -> None:
        rng = random.Random(f"{self.seed}-{user}")
        c = Client(self.frontends[k], timeout=self.timeout, retries=self.retries)
        n = 0
        while not self.stop.is_set():
            n += 1
            rid = f"{self.seed}-{user}-{n}"
            service, fields = self._next(rng, user, n)
            req = self.record.call(c, user, rid, service, fields)
            if service == "channel" and (req.outcome == ACKED or
                                         "already exists" in (req.description or "")):
                with self.lock:
                    self.channels.add(fields["channel"])
        c.close()

    def _next(self, rng: random.Random, user: str, n: int) -> tuple[str, dict[str, Any]]:
        with self.lock:
            known = sorted(self.channels)
        roll = rng.random()
        if roll < 0.55:
            return "publish", {"user": user, "channel": rng.choice(known),
                               "message": f"{user} post {n}"}
        if roll < 0.75:
            return "message", {"src": user, "dst": rng.choice(self.users),
                               "message": f"{user} note {n}"}
        if roll < 0.85:
            pool = int(self.record.clock() // POOL_SECONDS)
            return "channel", {"channel": f"sala-{pool}-{rng.randrange(CHANNEL_POOL)}"}
        if roll < 0.95:
            return "history", {"channel": rng.choice(known), "limit": 20}
        return "login", {"user": user}


def own_posts_seen(frontend: str, user: str, wanted: dict[str, set[str]],
                   timeout: float = 2.0) -> dict[str, set[str]]:
    """Of ``wanted`` (channel -> messages ``user`` had acknowledged), those ``history``
    returns, paging back from the newest until all are found or the channel's start."""
    c = Client(frontend, timeout=timeout, retries=10)
    seen: dict[str, set[str]] = {}
    try:
        for channel, messages in wanted.items():
            found: set[str] = set()
            before = None
            while found != messages:
                data: dict[str, Any] = {"channel": channel, "limit": 1000}
                if before is not None:
                    data["before"] = before
                page = c.request("history", data).get("messages", [])
                if not page:
                    break
                found |= {m["message"] for m in page
                          if m.get("user") == user and m.get("message") in messages}
                before = page[0]["id"]
            seen[channel] = found
    finally:
        c.close()
    return seen

