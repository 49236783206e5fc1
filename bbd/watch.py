"""What the dashboard knows about the board: a pure core fed by what it observes.

The dashboard daemon (``bbd.services.dashboard``) feeds this core the reference's list,
each server's ``status`` reply, the proxy's publications and the broker's answers; the core
turns them into a picture a person can read (who is up, who coordinates, clocks, rates,
lag), bounded histories for the charts and a timeline of what happened. It knows no
sockets and no reactor: time comes from the ``now`` it is given, so tests drive it with
``task.Clock``.

Everything it keeps is bounded: each chart series holds ``history`` points, the timeline
``timeline`` events, each channel ``posts`` posts, at most ``max_channels`` channels and
``max_servers`` servers (the longest-down ones are forgotten first). Private messages are
counted and never kept.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SERIES = ("offset", "lamport", "throughput", "requests", "lag")
# Berkeley rounds are frequent under load (one per 10 client messages, at most one per
# 0.5 s): the timeline merges them into one line per this many seconds, unless a round
# corrected a clock by more than BIG_CORRECTION.
BERKELEY_MERGE = 5.0
BIG_CORRECTION = 0.01
# Rates are taken over this window of samples: a 0.5 s difference of small counts is noise.
RATE_WINDOW = 2.0


@dataclass
class _Sample:
    at: float
    own_ops: int
    handled: int | None


@dataclass
class ServerView:
    name: str
    rank: int | None = None
    sync: str | None = None
    listed: bool = False
    answering: bool = False
    ever_answered: bool = False
    ready: bool = False
    status: dict[str, Any] = field(default_factory=dict)
    last_answer: float | None = None
    down_since: float | None = None
    throughput: float = 0.0  # operations it originated per second
    requests: float | None = None  # client requests it handled per second (if reported)
    lag: int = 0
    _samples: deque[_Sample] = field(default_factory=lambda: deque(maxlen=64))

    @property
    def state(self) -> str:
        if not self.answering:
            return "down"
        return "up" if self.ready else "catching-up"

    def row(self, coordinator: str | None) -> dict[str, Any]:
        s = self.status
        row: dict[str, Any] = {
            "name": self.name, "rank": self.rank, "state": self.state,
            "listed": self.listed, "coordinator": self.name == coordinator,
            "lamport": s.get("clock"), "offset": s.get("offset"),
            "applied": s.get("applied"), "lag": self.lag,
            "throughput": round(self.throughput, 2) if self.answering else None,
            "requests": None if self.requests is None or not self.answering
            else round(self.requests, 2),
            "election": s.get("election_phase"), "berkeley_rounds": s.get("berkeley_rounds"),
            "last_adjustment": s.get("last_adjustment"),
            "peers": s.get("peers"), "storage_error": s.get("storage_error"),
        }
        if "broker" in s:  # the readiness broker's view of this server, when it has one
            row["broker"] = s["broker"]
        return row


class BoardWatch:
    def __init__(self, now: Callable[[], float], history: int = 600, timeline: int = 200,
                 posts: int = 20, max_channels: int = 200, max_servers: int = 64,
                 proxy_silence: float = 3.0) -> None:
        self.now = now
        self.history = history
        self.max_channels = max_channels
        self.max_servers = max_servers
        self.posts_per_channel = posts
        self.proxy_silence = proxy_silence
        self.servers: dict[str, ServerView] = {}
        self.coordinator: str | None = None
        self.reference_up: bool | None = None
        self.broker_up: bool | None = None
        self.last_publication: float | None = None
        self.series: dict[str, dict[str, deque[tuple[float, float]]]] = {
            k: {} for k in SERIES}
        self.timeline: deque[dict[str, Any]] = deque(maxlen=timeline)
        self.channels: dict[str, deque[dict[str, Any]]] = {}
        self.private_messages = 0
        self.posts_seen = 0
        self.outbox: list[tuple[str, dict[str, Any]]] = []  # (SSE event name, payload)
        self.changed = False  # the topology changed: push it now, not at the next tick
        self._berkeley_rounds: dict[str, int] = {}
        self._berkeley_pending = 0
        self._berkeley_last: float | None = None

    # -- inputs ----------------------------------------------------------------------

    def reference_list(self, entries: list[dict[str, Any]]) -> None:
        """The reference answered ``list``: who is registered and alive."""
        if self.reference_up is False:
            self._event("reference", "reference answering again")
        self.reference_up = True
        listed = set()
        for entry in entries:
            name = entry.get("name")
            if not isinstance(name, str):
                continue
            listed.add(name)
            view = self._view(name)
            rank = entry.get("rank")
            if not view.listed:
                view.listed = True
                self._event("join", f"{name} joined (rank {rank})", server=name)
            view.rank = rank if isinstance(rank, int) else view.rank
            sync = entry.get("sync")
            view.sync = sync if isinstance(sync, str) else view.sync
        for view in self.servers.values():
            if view.listed and view.name not in listed:
                view.listed = False
                self._event("leave", f"{view.name} left the reference's list", server=view.name)

    def reference_failed(self, why: str) -> None:
        if self.reference_up is not False:
            self._event("reference", f"reference not answering ({why})")
        self.reference_up = False

    def server_status(self, name: str, status: dict[str, Any]) -> None:
        view = self._view(name)
        now = self.now()
        was = view.state
        if not view.answering and view.ever_answered:
            self._event("up", f"{name} answering again", server=name)
        view.answering = view.ever_answered = True
        view.last_answer, view.down_since = now, None
        old = view.status
        view.status = status
        ready = bool(status.get("ready"))
        rank = status.get("rank")
        if isinstance(rank, int):
            view.rank = rank
        if ready and not view.ready and old:
            gained = _int(status.get("applied")) - _int(old.get("applied"))
            self._event("catch-up", f"{name} caught up ({gained:+d} operations) and serves "
                        "clients", server=name)
        elif not ready and view.ready:
            self._event("catch-up", f"{name} is catching up", server=name)
        view.ready = ready
        phase = status.get("election_phase")
        if phase in ("electing", "waiting") \
                and old.get("election_phase") != phase:
            self._event("election", f"{name}: election under way ({phase})", server=name)
        coordinator = status.get("coordinator")
        # Announcements are the news; a status only fills in a coordinator we have not
        # heard of (the page opened after the election), never one we know is down.
        if isinstance(coordinator, str) and self.coordinator is None and (
                coordinator not in self.servers or self.servers[coordinator].answering):
            self._set_coordinator(coordinator, f"as {name} reports")
        self._berkeley(name, status)
        if view.state != was:
            self.changed = True

    def server_failed(self, name: str, why: str) -> None:
        view = self._view(name)
        if view.answering or view.down_since is None:
            view.down_since = self.now()
            if view.ever_answered:
                self._event("down", f"{name} stopped answering ({why})", server=name)
            self.changed = True
        view.answering = False
        if self.coordinator == name:
            self._set_coordinator(None, f"{name} is down")

    def publication(self, topic: str, message: dict[str, Any]) -> None:
        """A publication from the proxy, decoded: ``servers`` announcements, posts,
        private messages (counted only)."""
        self.last_publication = self.now()
        service = message.get("service")
        if topic == "servers":
            data = message.get("data")
            if service == "election" and isinstance(data, dict):
                name = data.get("coordinator")
                if isinstance(name, str) and name != self.coordinator:
                    self._set_coordinator(name, "announced")
            return
        if service == "message":
            self.private_messages += 1
            self.outbox.append(("private", {"count": self.private_messages}))
            return
        if service != "publish":
            return
        channel = message.get("channel", topic)
        if not isinstance(channel, str):
            return
        post = {"channel": channel, "user": message.get("user"),
                "message": message.get("message"), "clock": message.get("clock"),
                "timestamp": message.get("timestamp"), "id": message.get("id"),
                "at": self.now()}
        self._channel(channel).append(post)
        self.posts_seen += 1
        self.outbox.append(("post", post))

    def channel_list(self, names: list[Any]) -> None:
        """The broker answered ``channels`` (so it is up); channels without posts show too."""
        if self.broker_up is False:
            self._event("broker", "broker answering again")
        self.broker_up = True
        for name in names:
            if isinstance(name, str):
                self._channel(name)

    def broker_failed(self, why: str) -> None:
        if self.broker_up is not False:
            self._event("broker", f"broker not answering ({why})")
            self.changed = True
        self.broker_up = False

    # -- sampling --------------------------------------------------------------------

    def sample(self) -> dict[str, dict[str, float]]:
        """One point per answering server in each series; returns the points added."""
        now = self.now()
        answering = [v for v in self.servers.values() if v.answering and v.status]
        top = max((_int(v.status.get("applied")) for v in answering), default=0)
        added: dict[str, dict[str, float]] = {k: {} for k in SERIES}
        for view in answering:
            s = view.status
            own = _int((s.get("vector") or {}).get(view.name))
            handled = s.get("handled") if isinstance(s.get("handled"), int) else None
            samples = view._samples
            while len(samples) > 1 and now - samples[1].at >= RATE_WINDOW:
                samples.popleft()
            prev = samples[0] if samples else None
            if prev is not None and now > prev.at:
                view.throughput = max(0.0, (own - prev.own_ops) / (now - prev.at))
                if handled is not None and prev.handled is not None:
                    view.requests = max(0.0, (handled - prev.handled) / (now - prev.at))
            samples.append(_Sample(now, own, handled))
            view.lag = top - _int(s.get("applied"))
            values = {"offset": s.get("offset"), "lamport": s.get("clock"),
                      "throughput": view.throughput, "requests": view.requests,
                      "lag": view.lag}
            for key, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    series = self.series[key].setdefault(view.name,
                                                         deque(maxlen=self.history))
                    series.append((now, float(value)))
                    added[key][view.name] = float(value)
        return added

    # -- outputs ---------------------------------------------------------------------

    def topology(self) -> dict[str, Any]:
        now = self.now()
        proxy_up = None if self.last_publication is None else (
            now - self.last_publication <= self.proxy_silence)
        return {
            "at": now, "coordinator": self.coordinator,
            "reference": self.reference_up, "broker": self.broker_up, "proxy": proxy_up,
            "servers": [v.row(self.coordinator)
                        for v in sorted(self.servers.values(), key=_order)],
            "private_messages": self.private_messages, "posts_seen": self.posts_seen,
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything, for a page that just connected."""
        return {
            "topology": self.topology(),
            "series": {k: {n: list(pts) for n, pts in by.items()}
                       for k, by in self.series.items()},
            "timeline": list(self.timeline),
            "channels": {c: list(p) for c, p in sorted(self.channels.items())},
            "history": self.history,
        }

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        out, self.outbox = self.outbox, []
        return out

    # -- internals -------------------------------------------------------------------

    def _view(self, name: str) -> ServerView:
        view = self.servers.get(name)
        if view is None:
            if len(self.servers) >= self.max_servers:
                self._forget_one()
            view = self.servers[name] = ServerView(name)
            self.changed = True
        return view

    def _forget_one(self) -> None:
        gone = [v for v in self.servers.values() if not v.answering and not v.listed]
        victim = min(gone or self.servers.values(),
                     key=lambda v: v.down_since if v.down_since is not None else v.last_answer
                     or 0.0)
        del self.servers[victim.name]
        for by in self.series.values():
            by.pop(victim.name, None)

    def _channel(self, name: str) -> deque[dict[str, Any]]:
        posts = self.channels.get(name)
        if posts is None:
            if len(self.channels) >= self.max_channels:
                # Forget the channel whose latest post is oldest (or that has none).
                quiet = min(self.channels, key=lambda c: self.channels[c][-1]["at"]
                            if self.channels[c] else float("-inf"))
                del self.channels[quiet]
            posts = self.channels[name] = deque(maxlen=self.posts_per_channel)
            self.outbox.append(("channel", {"channel": name}))
        return posts

    def _set_coordinator(self, name: str | None, how: str) -> None:
        if name == self.coordinator:
            return
        old, self.coordinator = self.coordinator, name
        self.changed = True
        if name is None:
            self._event("coordinator", f"no coordinator ({how})")
            return
        rank = self.servers[name].rank if name in self.servers else None
        where = f" (rank {rank})" if rank is not None else ""
        text = f"coordinator is now {name}{where}, {how}"
        if old is not None:
            text += f"; was {old}"
        self._event("coordinator", text, server=name)

    def _berkeley(self, name: str, status: dict[str, Any]) -> None:
        rounds = status.get("berkeley_rounds")
        if not isinstance(rounds, int):
            return
        before = self._berkeley_rounds.get(name)
        self._berkeley_rounds[name] = rounds
        if before is None or rounds <= before:
            return
        self._berkeley_pending += rounds - before
        now = self.now()
        corrections = {n: v.status.get("last_adjustment") for n, v in self.servers.items()
                       if isinstance(v.status.get("last_adjustment"), int | float)}
        big = any(abs(c) > BIG_CORRECTION for c in corrections.values())
        if not big and self._berkeley_last is not None \
                and now - self._berkeley_last < BERKELEY_MERGE:
            return
        n, self._berkeley_pending = self._berkeley_pending, 0
        self._berkeley_last = now
        shown = ", ".join(f"{k} {v:+.4f} s" for k, v in sorted(corrections.items()))
        rounds_text = "1 round" if n == 1 else f"{n} rounds"
        self._event("berkeley", f"Berkeley: {rounds_text} by {name} (total {rounds}); "
                    f"latest corrections: {shown or 'none yet'}", server=name,
                    corrections=corrections)

    def _event(self, kind: str, text: str, **extra: Any) -> None:
        event = {"at": self.now(), "kind": kind, "text": text, **extra}
        self.timeline.append(event)
        self.outbox.append(("event", event))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _order(view: ServerView) -> tuple[int, str]:
    return (view.rank if isinstance(view.rank, int) else 1 << 30, view.name)
