"""Judges a run: the recorded requests against the data files each server holds once the
cluster has healed and converged. Pure: the runner gathers the inputs.

The rules (a violation of any is a bug):

- the four data files are byte-identical on every server;
- every acknowledged write is visible exactly once on every server, as it was written;
- nothing is visible that no client wrote (every entry carries a request id a client sent,
  with the fields it sent), and nothing a server refused;
- every request id is visible at most once;
- no channel name is granted twice, unless the creations overlapped a partition (then both
  sides may grant it, as the README says; the board keeps one);
- each client finds its own acknowledged posts in ``history``.

A timed-out request is indeterminate: it may be visible (once) or not.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from bbd.chaos.workload import ACKED, REFUSED, WRITES, Request

FILES = ("usuarios.json", "canais.json", "publicacoes.json", "mensagens.json")
_KIND_OF_FILE = {"canais.json": "channel", "publicacoes.json": "publish",
                 "mensagens.json": "message"}
_FIELDS = {"login": ("user",), "channel": ("channel",),
           "publish": ("user", "channel", "message"), "message": ("src", "dst", "message")}


@dataclass
class Violation:
    kind: str
    detail: str
    rids: list[str] = field(default_factory=list)
    at: float | None = None  # seconds since the load began (the first request involved)
    server: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, [])}


@dataclass
class Verdict:
    violations: list[Violation]
    counts: dict[str, Any]
    notes: list[str]

    @property
    def ok(self) -> bool:
        return not self.violations


def visible_writes(files: dict[str, str]) -> list[tuple[str, str | None, dict[str, Any]]]:
    """(kind, request id, fields) of every visible write in one server's data files."""
    out: list[tuple[str, str | None, dict[str, Any]]] = []
    for user in json.loads(files["usuarios.json"]):
        for login in user.get("login_ops", []):
            out.append(("login", login.get("rid"), {"user": user.get("user")}))
    for name, kind in _KIND_OF_FILE.items():
        for e in json.loads(files[name]):
            out.append((kind, e.get("rid"), {f: e.get(f) for f in _FIELDS[kind]}))
    return out


def overlaps(req: Request, windows: list[tuple[float, float]]) -> bool:
    return any(req.start <= end and start <= req.end for start, end in windows)


def check(requests: list[Request], files: dict[str, dict[str, str]],
          partitions: list[tuple[float, float]],
          history_seen: dict[str, dict[str, set[str]]]) -> Verdict:
    violations: list[Violation] = []
    notes: list[str] = []
    by_rid = {r.rid: r for r in requests}
    writes = [r for r in requests if r.service in WRITES]
    servers = sorted(files)

    # The four files, byte for byte, against the first server's.
    for name in servers[1:]:
        for f in FILES:
            if files[name][f] != files[servers[0]][f]:
                violations.append(Violation("files differ", f"{f} on {name} differs from "
                                            f"{servers[0]}'s", server=name))

    # Channel creations granted to more than one client.
    granted: dict[str, list[Request]] = defaultdict(list)
    for r in writes:
        if r.service == "channel" and r.outcome == ACKED:
            granted[r.fields["channel"]].append(r)
    double_losers: set[str] = set()
    for channel, reqs in sorted(granted.items()):
        if len(reqs) < 2:
            continue
        reqs.sort(key=lambda r: r.start)
        double_losers |= {r.rid for r in reqs}
        rids = [r.rid for r in reqs]
        if sum(overlaps(r, partitions) for r in reqs) >= len(reqs) - 1:
            notes.append(f"channel {channel!r} granted {len(reqs)} times during a partition "
                         f"(allowed; the board keeps one): {rids}")
        else:
            violations.append(Violation(
                "channel granted twice", f"channel {channel!r} granted {len(reqs)} times "
                "outside any partition", rids, reqs[0].start))

    for name in servers:
        seen = visible_writes(files[name])
        shown = Counter(rid for _, rid, _ in seen)
        for kind, rid, fields in seen:
            req = by_rid.get(rid) if rid is not None else None
            if req is None:
                violations.append(Violation("unknown write", f"{kind} {fields} with request "
                                            f"id {rid!r}, which no client sent", server=name))
            elif req.service != kind or any(req.fields.get(k) != v for k, v in fields.items()):
                violations.append(Violation("altered write", f"{kind} {fields} under request "
                                            f"id {rid}, sent as {req.service} {req.fields}",
                                            [rid], req.start, name))
            elif req.outcome == REFUSED:
                violations.append(Violation("refused write visible", f"{kind} {fields} was "
                                            f"answered {req.status}: {req.description}",
                                            [rid], req.start, name))
        for rid, n in shown.items():
            if rid is not None and n > 1:
                req = by_rid.get(rid)
                violations.append(Violation("applied more than once", f"request id {rid} is "
                                            f"visible {n} times", [rid],
                                            req.start if req else None, name))
        for r in writes:
            if r.outcome != ACKED or shown.get(r.rid):
                continue
            if r.rid in double_losers:
                continue  # a channel granted twice: reported above, once
            violations.append(Violation("acknowledged write lost", f"{r.service} {r.fields} "
                                        f"by {r.client} was acknowledged at {r.end:.2f} s",
                                        [r.rid], r.start, name))

    # Read your writes: each client's acknowledged posts, through history.
    for user, channels in sorted(_acked_posts(requests).items()):
        for channel, messages in sorted(channels.items()):
            missing = messages - history_seen.get(user, {}).get(channel, set())
            if missing:
                rids = sorted(r.rid for r in requests if r.service == "publish"
                              and r.fields["message"] in missing)
                first = min(by_rid[x].start for x in rids)
                violations.append(Violation(
                    "missing from history", f"{len(missing)} of {user}'s acknowledged posts "
                    f"on {channel!r} are not in its history", rids[:20], first))
    return Verdict(violations, tally(requests), notes)


def _acked_posts(requests: list[Request]) -> dict[str, dict[str, set[str]]]:
    posts: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in requests:
        if r.service == "publish" and r.outcome == ACKED and r.client != "setup":
            posts[r.fields["user"]][r.fields["channel"]].add(r.fields["message"])
    return posts


def acked_posts(requests: list[Request]) -> dict[str, dict[str, set[str]]]:
    """user -> channel -> messages it had acknowledged (what ``history`` must show)."""
    return {u: dict(c) for u, c in _acked_posts(requests).items()}


def tally(requests: list[Request]) -> dict[str, Any]:
    out: dict[str, Any] = {"operations": len(requests)}
    out.update(Counter(r.outcome for r in requests))
    by_service: dict[str, Counter] = defaultdict(Counter)
    for r in requests:
        by_service[r.service][r.outcome] += 1
    out["by_service"] = {s: dict(c) for s, c in sorted(by_service.items())}
    return out
