"""`bbd up`, `bbd status`, `bbd bench` as a newcomer meets them: busy ports, moved ports,
crash loops, a bench with no board, option help, and twistd finding our plugins."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bbd import config, launcher, supervision
from bbd.bench import BENCH_NAME
from bbd.cli import _parser
from bbd.localcluster import Cluster, _free_block

BIN = Path(sys.executable).parent


def bbd(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "bbd"), *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


# -- pure parts ----------------------------------------------------------------------

def test_base_port_moves_every_port_and_what_it_starts(tmp_path: Path) -> None:
    layout = launcher.Layout.at_base(tmp_path, 31000, servers=3)
    standard = launcher.Layout(tmp_path, servers=3)
    moved = [p for _, p in layout.ports()]
    assert [p - 31000 for p in moved] == [p - config.port("frontend")
                                          for _, p in standard.ports()]
    assert len(set(moved)) == len(moved) and min(moved) == 31000
    assert layout.span() == max(moved) - 31000 + 1
    every_arg = " ".join(a for d in layout.daemons() for a in d.args)
    for port in moved:
        assert f":{port}" in every_arg or f" {port}" in f" {every_arg}"
    assert not any(f":{p}" in every_arg for _, p in standard.ports())
    bot = launcher.bot_argv(layout, 1.0)
    if bot is not None:  # node present
        assert "tcp://127.0.0.1:31000" in bot and "tcp://127.0.0.1:31003" in bot
    assert "BROKER=tcp://127.0.0.1:31000 PROXY=tcp://127.0.0.1:31003" in \
        launcher.client_command(layout)
    assert launcher.status_command(layout).endswith("bbd status --base-port 31000")
    assert launcher.status_command(standard).endswith("bbd status")


def test_busy_ports_are_named_with_their_role() -> None:
    held = {5557, 5562}
    busy = supervision.busy_ports([("broker frontend", 5555), ("proxy XSUB", 5557),
                                   ("servidor-1 replication", 5562)], "127.0.0.1",
                                  in_use=lambda host, port: port in held)
    assert busy == [("proxy XSUB", 5557), ("servidor-1 replication", 5562)]
    line = supervision.busy_message(busy, "127.0.0.1", 5555, 12)
    assert "\n" not in line
    assert "port 5557" in line and "proxy XSUB" in line and "1 more" in line
    assert "--base-port" in line


def test_port_in_use_sees_a_listener_but_not_a_free_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert supervision.port_in_use("127.0.0.1", port)
    assert not supervision.port_in_use("127.0.0.1", port)


def test_last_error_is_the_exception_line_of_a_twistd_log() -> None:
    log = ("2026-01-01T00:00:00+0000 [-] starting up\n"
           "2026-01-01T00:00:01+0000 [-] Traceback (most recent call last):\n"
           "\t  File \"x.py\", line 1, in f\n"
           "\tzmq.error.ZMQError: Address already in use\n"
           "2026-01-01T00:00:01+0000 [-] Main loop terminated.\n")
    assert supervision.last_error(log) == "zmq.error.ZMQError: Address already in use"
    assert supervision.last_error("2026 [-] all fine\n") is None


def test_crash_watch_reports_each_death_and_gives_up_on_a_loop() -> None:
    watch = supervision.CrashWatch(quick=10, limit=3)
    first = watch.exited("s1", 0.5, "exited with code 1", "OSError: boom", "run/s1/twistd.log")
    assert not first.give_up and "OSError: boom" in first.line and "twistd.log" in first.line
    assert "(1/3)" in first.line
    second = watch.exited("s1", 0.4, "exited with code 1", "OSError: boom", None)
    assert "again" in second.line and not second.give_up
    other = watch.exited("s2", 60, "was killed by signal 9", None, None)
    assert not other.give_up and "after 60.0 s" in other.line
    third = watch.exited("s1", 0.4, "exited with code 1", "OSError: boom", "log")
    assert third.give_up and "no more restarts" in third.line
    # A long run in between resets the count.
    watch.exited("s2", 1, "exited with code 1", None, None)
    watch.exited("s2", 30, "exited with code 1", None, None)
    assert "(1/3)" in watch.exited("s2", 1, "exited with code 1", None, None).line


def test_every_option_is_described_with_its_default() -> None:
    parser = _parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("up", "status", "bench"):
        command = sub.choices[name]
        formatter = command._get_formatter()
        for action in command._actions:
            if action.dest == "help":
                continue
            text = formatter._get_help_string(action) or ""
            assert text, f"bbd {name} {action.option_strings}: no description"
            if action.default not in (False,):
                assert "default" in text, f"bbd {name} {action.option_strings}: no default"


# -- real processes ------------------------------------------------------------------

def test_busy_port_stops_bbd_up_before_anything_starts(tmp_path: Path) -> None:
    base = _free_block(12)
    with socket.socket() as holder:  # "another program" on the proxy's XSUB port
        holder.bind(("127.0.0.1", base + 2))
        holder.listen()
        began = time.monotonic()
        r = bbd("up", "--base-port", str(base), "--data", str(tmp_path / "run"), timeout=30)
    assert r.returncode == 1
    assert time.monotonic() - began < 10
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert f"port {base + 2}" in lines[0] and "--base-port" in lines[0]
    assert "Traceback" not in r.stdout + r.stderr
    assert not (tmp_path / "run").exists(), "nothing may start before the ports are checked"


def test_a_daemon_that_keeps_dying_is_reported_then_given_up(tmp_path: Path) -> None:
    base = _free_block(8)
    data = tmp_path / "run"
    # A journal that cannot be opened: the server dies at every start.
    (data / "servidor-1" / "journal.log").mkdir(parents=True)
    proc = subprocess.Popen([str(BIN / "bbd"), "up", "--servers", "1", "--base-port",
                             str(base), "--data", str(data)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "no more restarts" in line:
                break
        out = "".join(seen)
        assert "servidor-1 exited with code 1" in out, out
        assert "IsADirectoryError" in out, out
        assert "servidor-1 failed 5 times in a row" in out, out
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


def test_bench_without_a_board_says_so_in_one_line(tmp_path: Path) -> None:
    port = _free_block(1)
    r = bbd("bench", "--frontend", f"tcp://127.0.0.1:{port}", "--seconds", "0.5", timeout=30)
    assert r.returncode == 1
    assert "Traceback" not in r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"tcp://127.0.0.1:{port}" in lines[0], r.stderr
    assert "bbd up" in lines[0]


def test_bench_reuses_one_user_and_one_channel(cluster: Cluster) -> None:
    for _ in range(2):
        r = bbd("bench", "--frontend", cluster.frontend, "--clients", "2", "--seconds",
                "0.3", timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "rate=" in r.stdout and "errors=0" in r.stdout, r.stdout
    with cluster.client() as c:
        users = c.request("users")["users"]
        channels = c.request("channels")["channels"]
    assert users.count(BENCH_NAME) == 1 and channels.count(BENCH_NAME) == 1
    assert not [n for n in users + channels if n.startswith("bench-")]


def test_twistd_finds_the_plugins_from_any_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([str(BIN / "twistd"), "--help"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for plugin in ("bbd-broker", "bbd-proxy", "bbd-reference", "bbd-server"):
        assert plugin in r.stdout
    r = subprocess.run([str(BIN / "twistd"), "-n", "bbd-server", "--help"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--replication-port" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("command", ["up", "status", "bench"])
def test_help_runs(command: str) -> None:
    r = bbd(command, "--help", timeout=30)
    assert r.returncode == 0 and "default" in r.stdout


def test_bots_start_once_the_board_serves_and_stop_quietly(tmp_path: Path) -> None:
    if launcher.bot_argv(launcher.Layout(tmp_path), 1.0) is None:
        pytest.fail("node and clients/js are needed: `make install` sets them up")
    base = _free_block(8)
    proc = subprocess.Popen([str(BIN / "bbd"), "up", "--servers", "1", "--bots", "1",
                             "--bot-interval", "0.2", "--base-port", str(base), "--data",
                             str(tmp_path / "run")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "users()" in line:  # the bot logged in and went on
                break
        proc.send_signal(15)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(seen)
    assert proc.returncode == 0
    assert "BulletInBoard is ready in" in out, out
    ready_at = out.index("BulletInBoard is ready in")
    assert "[bot-1]" not in out[:ready_at], "a bot started before the servers served"
    assert "login(" in out and "FAILED" not in out and "failed:" not in out, out
    assert "done:" in rest, rest
    assert not [x for x in (out + rest).splitlines() if x.rstrip().endswith("[bot-1]")], rest
