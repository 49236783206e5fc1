"""The JavaScript bot (clients/js/bot.js) against a live cluster, and the compose file.

The bot needs its dependencies: `npm ci --prefix clients/js`.
"""

import json
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOT = ROOT / "clients" / "js" / "bot.js"
COMPOSE = ROOT / "docker-compose.yml"
CYCLES = 2
# Per cycle: users, channel, channels, publish, message, and the loop's 10 posts.
OPERATIONS_PER_CYCLE = 15

# The bot's log quotes every argument as a JSON string, so it parses back exactly.
QUOTED = r'("(?:[^"\\]|\\.)*")'
PUBLISH_RE = re.compile(rf"publish\(channel={QUOTED}, message={QUOTED}\) -> OK$")
MESSAGE_RE = re.compile(rf"message\(dst={QUOTED}, message={QUOTED}\) -> OK$")
DONE_RE = re.compile(r"done: (\d+) operations, (\d+) failed$")


def node():
    path = shutil.which("node")
    if path is None:
        pytest.fail("node is not installed (the bot needs Node.js 18 or later)")
    if not (ROOT / "clients" / "js" / "node_modules" / "zeromq").is_dir():
        pytest.fail("the bot's dependencies are missing: run `npm ci --prefix clients/js`")
    return path


def bot_command(*args):
    return [node(), str(BOT), *args]


def cluster_args(cluster, name, *extra):
    return ["--broker", cluster.frontend, "--proxy", cluster.xpub, "--name", name, *extra]


def unique_name():
    return f"bot-{uuid.uuid4().hex[:8]}"


def request(cluster, service, data):
    from bbd.client import Client

    client = Client(cluster.frontend)
    try:
        return client.request(service, data)
    finally:
        close = getattr(client, "close", None)
        if close is not None:
            close()


def parse_log(stdout):
    """(posts, messages, done) from a bot's log: posts as {channel: [text]}, messages as
    [(dst, text)], done as (operations, failed) from its closing line."""
    posts, messages, done = {}, [], None
    for line in stdout.splitlines():
        if m := PUBLISH_RE.search(line):
            posts.setdefault(json.loads(m[1]), []).append(json.loads(m[2]))
        elif m := MESSAGE_RE.search(line):
            messages.append((json.loads(m[1]), json.loads(m[2])))
        elif m := DONE_RE.search(line):
            done = (int(m[1]), int(m[2]))
    return posts, messages, done


def eventually(check, timeout=10.0):
    """Retry check() until it returns without AssertionError (replicas may lag a little)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def assert_on_servers(cluster, name, posts, messages):
    def check():
        users = request(cluster, "users", {})["users"]
        assert name in users
        for channel, texts in posts.items():
            history = request(cluster, "history", {"channel": channel, "limit": 1000})["messages"]
            stored = [h.get("message") for h in history if h.get("user") == name]
            missing = [t for t in texts if t not in stored]
            assert not missing, f"posts of {name} missing from {channel}: {missing}"
        history = request(cluster, "history", {"user": name, "limit": 1000})["messages"]
        stored = [h.get("message") for h in history]
        missing = [text for _dst, text in messages if text not in stored]
        assert not missing, f"private messages of {name} missing: {missing}"

    eventually(check)


def check_run(result_stdout, returncode, name):
    posts, messages, done = parse_log(result_stdout)
    assert returncode == 0, result_stdout
    assert done == (1 + CYCLES * OPERATIONS_PER_CYCLE, 0), result_stdout
    assert sum(len(t) for t in posts.values()) == CYCLES * 11, result_stdout
    assert len(messages) == CYCLES, result_stdout
    assert f'login(user="{name}") -> sucesso' in result_stdout
    return posts, messages


def test_bot_cycles_reach_the_servers(cluster):
    name = unique_name()
    result = subprocess.run(
        bot_command(*cluster_args(cluster, name, "--cycles", str(CYCLES), "--interval", "0")),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    posts, messages = check_run(result.stdout, result.returncode, name)
    assert_on_servers(cluster, name, posts, messages)


def test_concurrent_bots_all_succeed(cluster):
    names = [unique_name() for _ in range(3)]
    procs = [
        subprocess.Popen(
            bot_command(*cluster_args(cluster, n, "--cycles", str(CYCLES), "--interval", "0")),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for n in names
    ]
    outputs = []
    try:
        for proc in procs:
            stdout, _stderr = proc.communicate(timeout=180)
            outputs.append((stdout, proc.returncode))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, (stdout, returncode) in zip(names, outputs, strict=True):
        posts, messages = check_run(stdout, returncode, name)
        assert_on_servers(cluster, name, posts, messages)


def test_bot_stops_cleanly_on_sigterm(cluster):
    name = unique_name()
    proc = subprocess.Popen(
        bot_command(*cluster_args(cluster, name, "--interval", "0.1")),
        # stdout only: communicate() then reads through the same buffer as the loop below.
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    try:
        # Wait until it has logged in, then stop it mid-run.
        for line in proc.stdout:
            if "login(" in line:
                assert "-> sucesso" in line, line
                break
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "SIGTERM: stopping" in stdout
    assert proc.returncode == 0, stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bot_fails_without_a_broker():
    port = free_port()
    result = subprocess.run(
        bot_command(
            "--broker",
            f"tcp://127.0.0.1:{port}",
            "--proxy",
            f"tcp://127.0.0.1:{port}",
            "--cycles",
            "1",
            "--timeout",
            "0.2",
            "--retries",
            "2",
        ),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "login try 2/2 failed" in result.stdout
    assert "done: 1 operations, 1 failed" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--interval", "abc"],
        ["--cycles", "0"],
        ["--name", " x"],
        ["--name", "servers"],
        ["--unknown"],
    ],
)
def test_bot_rejects_bad_options(args):
    result = subprocess.run(
        bot_command(*args), capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert result.returncode == 2
    assert "usage:" in result.stderr


COMPOSE_SERVICES = {"claves", "referencia", "broker", "proxy", "servidor", "cliente",
                    "cliente_automatico"}


def compose(*args):
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed")
    return subprocess.run(
        [exe, "-f", str(COMPOSE), *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_compose_file_is_valid():
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr
    services = compose("config", "--services")
    assert services.returncode == 0, services.stderr
    assert set(services.stdout.split()) == COMPOSE_SERVICES


def test_compose_file_shape():
    yaml = pytest.importorskip("yaml")  # PyYAML: in the test extras, or this check skips
    config = yaml.safe_load(COMPOSE.read_text())
    services = config["services"]
    assert services["servidor"]["deploy"]["replicas"] == 3
    assert "/app/dados" in services["servidor"]["volumes"]
    for name in ("referencia", "proxy", "servidor"):  # the board's keys, from one volume
        assert "claves:/claves:ro" in services[name]["volumes"]
        assert "/claves" in services[name]["command"]
    assert services["cliente"]["container_name"] == "cliente"
    assert services["cliente"]["stdin_open"] and services["cliente"]["tty"]
    bots = services["cliente_automatico"]
    # Scaling needs no fixed name and no host port.
    assert "container_name" not in bots and "ports" not in bots
    assert bots["deploy"]["replicas"] == 2
    env_file = (ROOT / ".env").read_text().split()
    assert "COMPOSE_PROJECT_NAME=projeto_sd" in env_file
