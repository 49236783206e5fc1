"""``bbd probe``: is a daemon alive, is a server ready? For Kubernetes exec probes.

A server is alive when its sync port answers ``status`` (its reactor runs); it is ready when
it has also registered with the reference (it has a rank) and caught up with its peers (it
takes client requests). The reference is alive and ready when it answers ``list``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bbd import config

DAEMONS = ("server", "reference")


def default_endpoint(daemon: str) -> str:
    port = config.port("sync" if daemon == "server" else "reference")
    return f"tcp://127.0.0.1:{port}"


def request_for(daemon: str) -> str:
    return "status" if daemon == "server" else "list"


def verdict(daemon: str, endpoint: str, reply: dict[str, Any] | None,
            ready: bool) -> tuple[bool, str]:
    """(passes, one line saying why): the line is what the kubelet shows in the pod's
    events when a probe fails."""
    if reply is None:
        return False, f"{daemon} at {endpoint} does not answer"
    if daemon == "reference":
        return True, f"reference answers: {len(reply.get('list') or [])} live servers"
    name = reply.get("name", "?")
    if not ready:
        return True, f"server {name} answers"
    if reply.get("rank") is None:
        return False, f"server {name} is not registered with the reference yet"
    if not reply.get("ready"):
        return False, f"server {name} (rank {reply['rank']}) is catching up"
    return True, (f"server {name} (rank {reply['rank']}) is ready, "
                  f"{reply.get('applied', '?')} operations applied")


def probe(daemon: str, endpoint: str | None, ready: bool, timeout: float,
          keys_dir: Path | None = None) -> tuple[bool, str]:
    """``keys_dir``: the board's keys, for a board whose internal ports take only them."""
    from bbd import auth
    from bbd.client import ask_once

    endpoint = endpoint or default_endpoint(daemon)
    keys = auth.load(keys_dir) if keys_dir is not None else None
    reply = ask_once(endpoint, request_for(daemon), timeout=timeout,
                     security=auth.client_options(keys))
    return verdict(daemon, endpoint, reply, ready)
