"""docker-compose.yml and the installation as a newcomer meets them: the file validates, servers
have readable stable names and their own named volumes, the README's container names exist
under both Compose v2 and docker-compose 1.29, and the install steps pick the right packages.
(No Docker engine here: the file is checked by docker-compose itself and by its shape.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
SERVERS = ["servidor-1", "servidor-2", "servidor-3"]
DAEMONS = ["referencia", "broker", "proxy", *SERVERS]


def compose(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is missing: `make test` installs it (TEST_PACKAGES)"
    return subprocess.run([exe, "-f", str(COMPOSE), *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_compose_file_is_valid() -> None:
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr
    listed = compose("config", "--services")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == {*DAEMONS, "claves", "painel", "cliente",
                                          "cliente_automatico"}


def test_servers_have_stable_readable_names_and_own_named_volumes() -> None:
    config = yaml.safe_load(COMPOSE.read_text())
    s = config["services"]
    volumes = set()
    for name in SERVERS:
        server = s[name]
        # The host name is the server's name (bbd-server's default) and its peers' address.
        assert server["hostname"] == name and server["container_name"] == name
        assert "--name" not in server["command"] and "--host" not in server["command"]
        assert "deploy" not in server
        volume, keys = server["volumes"]
        source, target = volume.split(":")
        assert target == "/app/dados" and keys == "claves:/claves:ro"
        volumes.add(source)
    assert len(volumes) == len(SERVERS), "each server its own volume"
    reference_volume = s["referencia"]["volumes"][0].split(":")[0]
    assert set(config["volumes"]) == volumes | {reference_volume, "claves"}, \
        "named, not anonymous"


def test_dashboard_published_on_8080_watching_by_service_names() -> None:
    s = services()
    painel = s["painel"]
    assert painel["ports"] == ["8080:8080"]
    command = painel["command"]
    assert "bbd-dashboard" in command and command[command.index("--port") + 1] == "8080"
    assert {"tcp://referencia:5559", "tcp://proxy:5558", "tcp://broker:5555"} <= set(command)
    for name in SERVERS:  # each server's metrics, inside the compose network
        command = s[name]["command"]
        assert command[command.index("--metrics-port") + 1] == "9100"


def test_attaching_to_a_daemon_does_not_stop_it() -> None:
    s = services()
    for name in DAEMONS:
        d = s[name]
        # Detach keys need a terminal and stdin; an ignored SIGINT survives exec and twistd
        # keeps it ignored, so Ctrl-C in `docker attach` does not stop the daemon.
        assert d["tty"] and d["stdin_open"] and d["init"], name
        entry = " ".join(d["entrypoint"])
        assert "trap '' INT" in entry and "exec" in entry, name
    cliente = s["cliente"]
    assert cliente["container_name"] == "cliente"
    assert cliente["stdin_open"] and cliente["tty"]


def test_an_ignored_sigint_stays_ignored_through_the_entrypoint() -> None:
    entry = services()["broker"]["entrypoint"]
    # Compose turns $$ into $; the shell then runs the command with SIGINT ignored.
    argv = [a.replace("$$", "$") for a in entry]
    probe = ["python3", "-c",
             "import signal; print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)"]
    r = subprocess.run(argv + probe, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "True", r.stdout + r.stderr


def test_bots_still_scale() -> None:
    bots = services()["cliente_automatico"]
    assert "container_name" not in bots and "ports" not in bots
    assert bots["deploy"]["replicas"] == 2
    assert set(SERVERS) <= set(bots["depends_on"])
    env_file = (ROOT / ".env").read_text().split()
    assert "COMPOSE_PROJECT_NAME=projeto_sd" in env_file


def test_readme_container_names_exist_under_both_compose_versions() -> None:
    readme = (ROOT / "README.md").read_text()
    named = {d.get("container_name") for d in services().values()}
    used = set(re.findall(r"docker (?:attach|logs -f|stop|restart) ([\w.-]+)", readme))
    assert used, "the README names containers"
    assert used <= named, f"not fixed container names: {used - named}"
    # A project-prefixed name differs between Compose v2 (-1) and 1.29 (_1): no command
    # may rely on one.
    commands = [line for line in readme.splitlines() if line.startswith("docker")]
    assert commands and not [c for c in commands if "projeto_sd" in c]


def test_make_run_installs_no_docker_compose_but_make_test_does() -> None:
    def dry(target: str) -> str:
        r = subprocess.run(["make", "-n", target], capture_output=True, text=True,
                           timeout=60, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        return r.stdout
    run = dry("run")
    assert "system-packages.sh" in run and "docker-compose" not in run
    assert "docker-compose" in dry("test")
    assert "editable_mode" not in (ROOT / "Makefile").read_text()


def test_c_client_build_finds_msgpack_under_either_name(tmp_path: Path) -> None:
    """Debian 13 calls it msgpack-c (-lmsgpack-c), Debian 12 msgpack (-lmsgpackc)."""
    (tmp_path / "msgpack-c.pc").write_text(
        "Name: msgpack-c\nDescription: fake\nVersion: 6.0.0\n"
        "Libs: -lmsgpack-c\nCflags: -I/nonexistent/msgpack-c\n")
    env = {**os.environ, "PKG_CONFIG_PATH": str(tmp_path)}
    r = subprocess.run(["make", "-n", "-B", "-C", str(ROOT / "clients" / "c")], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "-lmsgpack-c" in r.stdout and "-I/nonexistent/msgpack-c" in r.stdout
    r = subprocess.run(["make", "-n", "-B", "-C", str(ROOT / "clients" / "c")],
                       capture_output=True, text=True, timeout=60)
    assert "-lmsgpack-c" not in r.stdout  # this machine's own msgpack, whichever it is
