"""Routing by readiness: the broker's state, pure (frames in, frames out, time injected).

Servers ("workers") announce whether they are ready and how many requests they can hold
(credit), and repeat it as their heartbeat. A request goes to the ready, live worker with
the fewest requests in flight, so a slow or hung server stops receiving work as soon as
the others answer faster. Each request gets a broker request id; a request not answered
within ``resend_after`` is sent again to another worker with the same id (the servers
apply a request id once), and the first reply wins: later ones are dropped, so the client
sees exactly one. A worker silent for ``liveness`` gets no new work, and its unanswered
requests are re-sent at once.

The service owning the sockets calls ``client_request``, ``worker_message`` and ``tick``
and then sends what ``to_front`` / ``to_back`` hold (lists of frame lists, first frame the
routing id) and logs ``events``. See docs/protocol.md for the backend frames.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any

PROTOCOL = b"BBD1"  # first frame of every backend message
READY = b"READY"  # worker -> broker: [PROTOCOL, READY, credit, name]; also the heartbeat
BUSY = b"BUSY"  # worker -> broker: [PROTOCOL, BUSY, credit, name]: alive, takes no work
REPLY = b"REPLY"  # worker -> broker: [PROTOCOL, REPLY, request id, body]
BYE = b"BYE"  # worker -> broker: [PROTOCOL, BYE]: stopping; re-send what it holds
REQUEST = b"REQUEST"  # broker -> worker: [PROTOCOL, REQUEST, request id, body]
HEARTBEAT = b"HEARTBEAT"  # broker -> worker: [PROTOCOL, HEARTBEAT, routing 1|0, in flight]

MAX_CREDIT = 1000


@dataclass
class Worker:
    wid: bytes
    name: str
    credit: int
    ready: bool
    heard: float  # last message from it
    since: float  # start of the current stretch of hearing from it
    in_flight: set[bytes] = field(default_factory=set)
    routing: bool = False  # as last logged


@dataclass
class Pending:
    rid: bytes
    route: list[bytes]  # the client's envelope on the frontend, returned with the reply
    body: bytes
    born: float
    deadline: float  # when to send it again elsewhere
    workers: list[bytes] = field(default_factory=list)  # who was sent it


@dataclass
class Settings:
    heartbeat: float = 0.25  # broker -> worker heartbeat interval
    liveness: float = 1.0  # a worker silent this long gets no new work
    resend_after: float = 0.6  # an unanswered request goes to another worker after this
    give_up: float = 6.0  # a request this old is dropped (its client gave up long ago)
    warmup: float = 0.3  # a worker heard again after silence waits this long for work
    forget_after: float = 60.0  # a worker silent this long leaves the table (and status)
    max_pending: int = 20_000


class Balancer:
    def __init__(self, settings: Settings | None = None, boot: str | None = None) -> None:
        self.s = settings or Settings()
        # Request ids are unique across broker restarts: a reused id would be answered
        # with another request's result.
        self.prefix = f"bk-{boot or os.urandom(4).hex()}-".encode()
        self.counter = 0
        self.workers: dict[bytes, Worker] = {}
        self.pending: dict[bytes, Pending] = {}
        self.waiting: deque[bytes] = deque()  # pending ids no worker had room for
        self.to_front: list[list[bytes]] = []
        self.to_back: list[list[bytes]] = []
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.next_heartbeat = 0.0
        self.turn = 0  # rotates ties between equally loaded workers
        self.stats = {"requests": 0, "replies": 0, "resent": 0, "late_dropped": 0,
                      "dropped": 0}

    # -- input -----------------------------------------------------------------------

    def client_request(self, route: list[bytes], body: bytes, now: float) -> None:
        if len(self.pending) >= self.s.max_pending:
            self.stats["dropped"] += 1
            return
        self.counter += 1
        rid = self.prefix + b"%x" % self.counter
        p = self.pending[rid] = Pending(rid, route, body, now, now + self.s.resend_after)
        self.stats["requests"] += 1
        if not self._dispatch(p, now):
            self.waiting.append(rid)

    def worker_message(self, wid: bytes, frames: list[bytes], now: float) -> None:
        if len(frames) < 2 or frames[0] != PROTOCOL:
            return  # not ours (see the README on servers that do not speak it)
        kind = frames[1]
        if kind == REPLY and len(frames) == 4:
            self._heard(wid, now)
            self._reply(wid, frames[2], frames[3])
        elif kind in (READY, BUSY) and len(frames) == 4:
            self._state(wid, kind == READY, frames[2], frames[3], now)
        elif kind == BYE:
            w = self.workers.pop(wid, None)
            if w is not None:
                self._event("info", "{name} is stopping: no more requests to it", w)
                self._strand(w, now)
        self._drain(now)

    def undeliverable(self, frames: list[bytes], now: float) -> None:
        """The socket could not take ``frames`` (the worker is gone or its queue is full)."""
        w = self.workers.get(frames[0])
        if len(frames) == 5 and frames[2] == REQUEST:
            rid = frames[3]
            if w is not None:
                w.in_flight.discard(rid)
            p = self.pending.get(rid)
            if p is not None:
                p.deadline = now  # elsewhere at the next tick
        if w is not None and w.routing:
            w.heard = min(w.heard, now - self.s.liveness - 1e-3)  # treat it as silent
            self._update_routing(w, now)

    def tick(self, now: float) -> None:
        for w in list(self.workers.values()):
            self._update_routing(w, now)
            if now - w.heard > self.s.forget_after:
                del self.workers[w.wid]
                self._event("info", "{name} forgotten after {s:.0f} s of silence", w,
                            s=now - w.heard)
        for p in list(self.pending.values()):
            if now - p.born > self.s.give_up:
                del self.pending[p.rid]
                self.stats["dropped"] += 1
            elif p.workers and now >= p.deadline and self._should_resend(p, now):
                if self._dispatch(p, now):
                    self.stats["resent"] += 1
                else:
                    p.deadline = now + self.s.resend_after / 4
        self._drain(now)
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + self.s.heartbeat
            for w in self.workers.values():
                self.to_back.append([w.wid, PROTOCOL, HEARTBEAT,
                                     b"1" if w.routing else b"0", b"%d" % len(w.in_flight)])

    # -- state -----------------------------------------------------------------------

    def _live(self, w: Worker, now: float) -> bool:
        return now - w.heard <= self.s.liveness

    def _heard(self, wid: bytes, now: float) -> Worker | None:
        w = self.workers.get(wid)
        if w is not None:
            if not self._live(w, now):
                w.since = now  # back from silence: a warm-up before new work
            w.heard = now
        return w

    def _state(self, wid: bytes, ready: bool, credit: bytes, name: bytes, now: float) -> None:
        try:
            n = max(1, min(MAX_CREDIT, int(credit)))
        except ValueError:
            return
        w = self._heard(wid, now)
        if w is None:
            text = name.decode("utf-8", "replace")[:64]
            for old in [x for x in self.workers.values() if x.name == text]:
                # The same server on a new connection (restarted): the old one is dead.
                del self.workers[old.wid]
                self._strand(old, now)
            w = self.workers[wid] = Worker(wid, text, n, ready, now, now)
            self._event("info", "{name} joined (credit {credit})", w, credit=n)
        w.credit, w.ready = n, ready
        self._update_routing(w, now)

    def _update_routing(self, w: Worker, now: float) -> None:
        """Routing to a worker needs it ready, heard within ``liveness``, and heard
        continuously for ``warmup`` (a server resumed from a pause gets the moment it
        needs to notice the pause and say it is catching up)."""
        live = self._live(w, now)
        routing = w.ready and live and now - w.since >= self.s.warmup
        if routing == w.routing:
            return
        w.routing = routing
        if routing:
            self._event("info", "routing to {name} (credit {credit})", w, credit=w.credit)
            return
        why = "not ready (catching up)" if live else f"silent for {now - w.heard:.1f} s"
        self._event("warn", "stopped routing to {name}: {why}; {n} requests in flight",
                    w, why=why, n=len(w.in_flight))
        if not live:
            self._strand(w, now)

    def _strand(self, w: Worker, now: float) -> None:
        """Requests held by a dead or silent worker go elsewhere at once."""
        for rid in w.in_flight:
            p = self.pending.get(rid)
            if p is not None:
                p.deadline = min(p.deadline, now)
        if w.wid not in self.workers:
            w.in_flight.clear()

    def _should_resend(self, p: Pending, now: float) -> bool:
        """Once past the deadline; again only when no worker holding it is alive (so an
        overloaded but live board is not handed every slow request twice over)."""
        if len(p.workers) < 2:
            return True
        for wid in p.workers:
            w = self.workers.get(wid)
            if w is not None and p.rid in w.in_flight and self._live(w, now):
                return False
        return True

    def _pick(self, exclude: list[bytes]) -> Worker | None:
        """The routable worker with room and the fewest requests in flight; ties rotate."""
        best: Worker | None = None
        ws = list(self.workers.values())
        n = len(ws)
        self.turn += 1
        for i in range(n):
            w = ws[(self.turn + i) % n]
            if w.routing and len(w.in_flight) < w.credit and w.wid not in exclude and \
                    (best is None or len(w.in_flight) < len(best.in_flight)):
                best = w
        return best

    def _dispatch(self, p: Pending, now: float) -> bool:
        w = self._pick(p.workers)
        if w is None:
            return False
        w.in_flight.add(p.rid)
        p.workers.append(w.wid)
        p.deadline = now + self.s.resend_after
        self.to_back.append([w.wid, PROTOCOL, REQUEST, p.rid, p.body])
        return True

    def _drain(self, now: float) -> None:
        """Send waiting requests while some worker has room."""
        while self.waiting:
            p = self.pending.get(self.waiting[0])
            if p is None:
                self.waiting.popleft()
                continue
            if not self._dispatch(p, now):
                return
            self.waiting.popleft()

    def _reply(self, wid: bytes, rid: bytes, body: bytes) -> None:
        w = self.workers.get(wid)
        if w is not None:
            w.in_flight.discard(rid)
        p = self.pending.pop(rid, None)
        if p is None:
            self.stats["late_dropped"] += 1  # answered already, or given up
            return
        self.stats["replies"] += 1
        self.to_front.append([*p.route, body])

    def _event(self, level: str, fmt: str, w: Worker, **fields: Any) -> None:
        self.events.append((level, fmt, {"name": w.name, **fields}))

    # -- observation -----------------------------------------------------------------

    def status(self, now: float) -> dict[str, Any]:
        return {
            "workers": [{"name": w.name, "ready": w.ready, "routing": w.routing,
                         "live": self._live(w, now),
                         "in_flight": len(w.in_flight), "credit": w.credit,
                         "silent": round(now - w.heard, 3)}
                        for w in sorted(self.workers.values(), key=lambda w: w.name)],
            "pending": len(self.pending), "waiting": len(self.waiting), **self.stats,
        }
