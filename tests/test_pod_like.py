"""A server started the way deploy/kubernetes starts it: no --name and no --host, its name
and the address its peers reach it at from BBD_NAME and BBD_HOST (a DNS name, not an
address), and stopped by SIGTERM as the kubelet stops it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from bbd import config
from bbd.localcluster import Cluster, wait_for

NAME = "servidor-0"
HOST = "localhost"  # resolved by name, as servidor-0.servidor is in a cluster


def spawn_pod_like(cluster: Cluster, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    """The cluster's next server, with the identity flags taken out of its command line."""
    daemon = cluster.layout.server_daemon(cluster.layout.servers + 1)
    args = daemon.args
    for flag in ("--name", "--host"):
        if flag in args:
            i = args.index(flag)
            del args[i:i + 2]
    daemon.directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(daemon.argv(), cwd=daemon.directory, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT,
                            env={**os.environ, "BBD_NAME": NAME, "BBD_HOST": HOST, **env})
    return proc, daemon.directory


def listed(cluster: Cluster) -> dict[str, dict]:
    reply = cluster.ask(cluster.reference, "list") or {}
    return {e["name"]: e for e in reply.get("list", [])}


def test_name_and_dns_address_from_the_environment(make_cluster) -> None:
    cluster = make_cluster(servers=2)
    proc, _ = spawn_pod_like(cluster, {})
    try:
        entry = wait_for(lambda: listed(cluster).get(NAME), 30, f"{NAME} to register")
        sync = cluster.layout.server_ports(3)[0]
        assert entry["sync"] == f"tcp://{HOST}:{sync}"
        # Its advertised DNS name is what answers, once it has caught up.
        wait_for(lambda: (cluster.ask(entry["sync"], "status", timeout=0.5) or {}).get("ready"),
                 30, f"{NAME} to be ready at its advertised address")
        # Its peers replicate to it through that name: a write anywhere reaches it.
        c = cluster.client()
        assert c.request("channel", {"channel": "pod"})["status"] == "sucesso"
        first = cluster.status(cluster.names()[0])["applied"]
        wait_for(lambda: (cluster.ask(entry["sync"], "status", timeout=0.5) or {})
                 .get("applied") == first, 15, f"{NAME} to hold every operation")
    finally:
        proc.kill()
        proc.wait(10)


def test_sigterm_flushes_everything_before_exit(make_cluster, tmp_path: Path) -> None:
    """The JSON files are written at stop, not only by the periodic snapshot (switched off
    here by a one-hour interval), and the daemon exits well within the grace period."""
    slow = tmp_path / "bbd.toml"
    text = config.config_path().read_text()
    slow.write_text(text.replace(
        f"snapshot_interval = {config.timing('snapshot_interval')}", "snapshot_interval = 3600",
        1))
    assert "snapshot_interval = 3600" in slow.read_text()
    cluster = make_cluster(servers=2)
    proc, directory = spawn_pod_like(cluster, {"BBD_CONFIG": str(slow)})
    try:
        wait_for(lambda: listed(cluster).get(NAME), 30, f"{NAME} to register")
        sync = listed(cluster)[NAME]["sync"]
        wait_for(lambda: (cluster.ask(sync, "status", timeout=0.5) or {}).get("ready"), 30,
                 f"{NAME} to be ready")
        c = cluster.client()
        c.request("login", {"user": "ana"})
        c.request("channel", {"channel": "geral"})
        sent = [f"m{i}" for i in range(10)]
        for m in sent:
            assert c.request("publish", {"user": "ana", "channel": "geral", "message": m}) \
                ["status"] == "OK"
        wait_for(lambda: (cluster.ask(sync, "status", timeout=0.5) or {}).get("applied")
                 == cluster.status(cluster.names()[0])["applied"], 15,
                 f"{NAME} to hold every operation")
        assert not (directory / "publicacoes.json").exists() or \
            json.loads((directory / "publicacoes.json").read_text()) == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) in (0, -signal.SIGTERM)  # twistd exits by the signal it got
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    posts = json.loads((directory / "publicacoes.json").read_text())
    assert [p["message"] for p in posts] == sent
    assert f"{NAME} stopped" in (directory / "twistd.log").read_text()
