"""``bbd probe`` (the Kubernetes probes) and the server's name and address from the
environment (a pod's name and its DNS name under the headless service)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from twisted.python import usage

from bbd import probe
from bbd.launcher import twistd
from bbd.localcluster import Cluster, _free_block, wait_for


def run_probe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bbd.cli", "probe", *args],
                          capture_output=True, text=True, timeout=30)


# -- the verdict, pure ------------------------------------------------------------------

def test_no_answer_fails_every_probe() -> None:
    for daemon in probe.DAEMONS:
        for ready in (False, True):
            ok, why = probe.verdict(daemon, "tcp://127.0.0.1:1", None, ready)
            assert not ok and "does not answer" in why


def test_server_alive_is_not_yet_ready() -> None:
    unregistered = {"name": "servidor-0", "rank": None, "ready": False}
    catching_up = {"name": "servidor-0", "rank": 2, "ready": False}
    ready = {"name": "servidor-0", "rank": 2, "ready": True, "applied": 7}
    for reply in (unregistered, catching_up, ready):
        assert probe.verdict("server", "e", reply, ready=False)[0]
    ok, why = probe.verdict("server", "e", unregistered, ready=True)
    assert not ok and "not registered" in why
    ok, why = probe.verdict("server", "e", catching_up, ready=True)
    assert not ok and "catching up" in why
    ok, why = probe.verdict("server", "e", ready, ready=True)
    assert ok and "rank 2" in why and "7 operations" in why


def test_reference_answers_is_enough() -> None:
    ok, why = probe.verdict("reference", "e", {"list": [{"name": "a"}]}, ready=True)
    assert ok and "1 live servers" in why


def test_default_endpoints_are_the_configured_ports() -> None:
    from bbd import config

    assert probe.default_endpoint("server") == f"tcp://127.0.0.1:{config.port('sync')}"
    assert probe.default_endpoint("reference") == \
        f"tcp://127.0.0.1:{config.port('reference')}"


# -- the command against real daemons -----------------------------------------------------

def test_probe_passes_on_a_ready_server_and_the_reference(cluster: Cluster) -> None:
    name = cluster.names()[0]
    keys = str(cluster.keys.directory)
    # The board's internal ports take only its keys: without them, no answer.
    r = run_probe("server", "--endpoint", cluster.sync_endpoint(name), "--timeout", "0.5")
    assert r.returncode == 1 and "does not answer" in r.stderr
    r = run_probe("server", "--ready", "--endpoint", cluster.sync_endpoint(name),
                  "--keys", keys)
    assert r.returncode == 0, r.stderr
    assert f"server {name}" in r.stdout and "is ready" in r.stdout
    r = run_probe("reference", "--endpoint", cluster.reference, "--keys", keys)
    assert r.returncode == 0, r.stderr


def test_probe_fails_where_nothing_answers() -> None:
    port = _free_block(1)
    r = run_probe("server", "--endpoint", f"tcp://127.0.0.1:{port}", "--timeout", "0.3")
    assert r.returncode == 1 and "does not answer" in r.stderr


def test_unregistered_server_is_alive_but_not_ready(tmp_path: Path) -> None:
    """A server whose reference is out of reach answers status but must not be ready: in
    a pod, Kubernetes then keeps it out of a rollout's count and restarts nothing."""
    base = _free_block(6)
    sync = f"tcp://127.0.0.1:{base}"
    proc = subprocess.Popen(
        [twistd(), "-n", "--pidfile=", "--logfile", str(tmp_path / "twistd.log"),
         "bbd-server", "--name", "servidor-0", "--data", str(tmp_path / "dados"),
         "--sync-port", str(base), "--replication-port", str(base + 1),
         "--broker", f"tcp://127.0.0.1:{base + 2}", "--publish", f"tcp://127.0.0.1:{base + 3}",
         "--subscribe", f"tcp://127.0.0.1:{base + 4}",
         "--reference", f"tcp://127.0.0.1:{base + 5}", "--no-auth"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: run_probe("server", "--endpoint", sync, "--timeout", "0.5")
                 .returncode == 0, 30, "the server's sync port to answer")
        r = run_probe("server", "--ready", "--endpoint", sync)
        assert r.returncode == 1 and "not registered" in r.stderr
    finally:
        proc.terminate()
        proc.wait(10)


# -- name and address from the environment ---------------------------------------------

def server_options(args: list[str], monkeypatch: pytest.MonkeyPatch,
                   env: dict[str, str]) -> usage.Options:
    from bbd.services.server import Options

    for var in ("BBD_NAME", "BBD_HOST"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    o = Options()
    o.parseOptions([*args, "--no-auth"])
    return o


def test_name_and_host_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"BBD_NAME": "servidor-1", "BBD_HOST": "servidor-1.servidor"}
    o = server_options(["--bind", "*"], monkeypatch, env)
    assert (o["name"], o["host"]) == ("servidor-1", "servidor-1.servidor")


def test_command_line_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"BBD_NAME": "servidor-1", "BBD_HOST": "servidor-1.servidor"}
    o = server_options(["--name", "s9", "--host", "10.0.0.9"], monkeypatch, env)
    assert (o["name"], o["host"]) == ("s9", "10.0.0.9")


def test_without_environment_the_host_defaults_stay(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    o = server_options(["--bind", "127.0.0.1"], monkeypatch, {})
    assert (o["name"], o["host"]) == (socket.gethostname(), "127.0.0.1")
    o = server_options(["--bind", "*"], monkeypatch, {"BBD_HOST": ""})
    assert o["host"] == socket.gethostname()


def test_a_bad_name_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(usage.UsageError, match="--name"):
        server_options([], monkeypatch, {"BBD_NAME": "servers"})
