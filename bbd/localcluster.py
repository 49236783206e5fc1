"""Real daemons for tests and benchmarks: each a ``twistd -n`` process on 127.0.0.1, with
free ports, readiness checks instead of sleeps, and signals for fault tests."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from bbd import auth
from bbd.client import Client, ask_once
from bbd.launcher import Daemon, Layout


def _free_block(n: int) -> int:
    """A base port with ``n`` consecutive free ports after it."""
    for _ in range(200):
        # Below Linux's ephemeral range (32768+): a port found free there can be taken by
        # any outgoing connection before the daemon binds it.
        base = random.randrange(20000, 32768 - n)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports")


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class Cluster:
    def __init__(self, root: Path, servers: int = 3, skews: list[float] | None = None,
                 server_args: list[str] | None = None, env: dict[str, str] | None = None,
                 routing: str = "readiness", authenticated: bool = True):
        """``authenticated``: CURVE on the internal links with keys made in ``root/keys``
        (``self.keys``, for the harness's own probes); False runs the daemons --no-auth."""
        base = _free_block(6 + 2 * servers + 2)
        keys_dir = root / "keys" if authenticated else None
        if keys_dir is not None:
            auth.create(keys_dir)
        self.keys = auth.load(keys_dir) if keys_dir is not None else None
        self.layout = Layout(root, servers=servers, frontend=base, backend=base + 1,
                             xsub=base + 2, xpub=base + 3, reference=base + 4,
                             server_base=base + 6, skews=skews or [],
                             broker_status=base + 5, routing=routing,
                             keys=keys_dir)
        self.server_args = server_args or []
        self.env = {**os.environ, **(env or {})}
        self.procs: dict[str, subprocess.Popen] = {}

    # -- addresses -------------------------------------------------------------------
    @property
    def frontend(self) -> str:
        return self.layout.url(self.layout.frontend)

    @property
    def xpub(self) -> str:
        return self.layout.url(self.layout.xpub)

    @property
    def broker_status(self) -> str:
        return self.layout.url(self.layout.broker_status)

    @property
    def reference(self) -> str:
        return self.layout.url(self.layout.reference)

    @property
    def xsub(self) -> str:
        return self.layout.url(self.layout.xsub)

    def replication_endpoint(self, name: str) -> str:
        i = self.names().index(name) + 1
        return self.layout.url(self.layout.server_ports(i)[1])

    def names(self) -> list[str]:
        return [self.layout.server_name(i) for i in range(1, self.layout.servers + 1)]

    def data_dir(self, name: str) -> Path:
        return self.layout.data / name

    def sync_endpoint(self, name: str) -> str:
        i = self.names().index(name) + 1
        return self.layout.url(self.layout.server_ports(i)[0])

    def client(self, **kw: Any) -> Client:
        return Client(self.frontend, **kw)

    # -- processes -------------------------------------------------------------------
    def _daemon(self, name: str) -> Daemon:
        if name == "reference":
            return self.layout.reference_daemon()
        if name == "proxy":
            return self.layout.proxy_daemon()
        if name == "broker":
            return self.layout.broker_daemon()
        if name == "dashboard":
            return self.layout.dashboard_daemon()
        return self.layout.server_daemon(self.names().index(name) + 1, self.server_args)

    def spawn(self, name: str) -> None:
        daemon = self._daemon(name)
        daemon.directory.mkdir(parents=True, exist_ok=True)
        err = (daemon.directory / "stderr.log").open("ab")
        self.procs[name] = subprocess.Popen(daemon.argv(), env=self.env, stdout=err,
                                            stderr=subprocess.STDOUT, cwd=daemon.directory)

    def start(self, timeout: float = 30) -> Cluster:
        for name in ["reference", "proxy", "broker"]:
            self.spawn(name)
        for name in self.names():
            self.spawn(name)
        self.wait_up(["reference", "proxy", "broker", *self.names()], timeout)
        return self

    def wait_up(self, names: list[str], timeout: float = 30) -> None:
        for name in names:
            wait_for(lambda n=name: self.is_ready(n), timeout, f"{name} to be ready")

    def is_ready(self, name: str) -> bool:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is not None:
            log = self.data_dir(name) / "twistd.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{tail}")
        relay = self.relay_port(name)
        if relay is not None:
            return _port_open(relay[1], relay[0])
        if name == "reference":
            return self.ask(self.reference, "list") is not None
        s = self.status(name)
        if self.layout.routing == "readiness":  # ... and the broker routes to it
            return bool(s and s.get("ready") and s.get("broker", {}).get("routing"))
        return bool(s and s.get("ready"))

    def relay_port(self, name: str) -> tuple[str, int] | None:
        """(host, port) a relay (proxy, broker) accepts connections on once it is up."""
        ports = {"proxy": self.layout.xpub, "broker": self.layout.frontend,
                 "dashboard": self.layout.dashboard}
        return (self.layout.host, ports[name]) if name in ports else None

    def ask(self, endpoint: str, service: str, data: dict | None = None,
            timeout: float = 0.5) -> dict | None:
        """One probe of an internal port, with the board's keys."""
        return ask_once(endpoint, service, data, timeout, auth.client_options(self.keys))

    def status(self, name: str, timeout: float = 0.5) -> dict | None:
        return self.ask(self.sync_endpoint(name), "status", timeout=timeout)

    def broker_view(self, timeout: float = 0.5) -> dict | None:
        """The broker's status: per server, ready / routing / in flight; re-send counts."""
        return ask_once(self.broker_status, "status", timeout=timeout)  # an open port

    def signal(self, name: str, sig: int) -> None:
        self.procs[name].send_signal(sig)

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def restart(self, name: str, timeout: float = 30) -> None:
        if self.procs[name].poll() is None:
            self.kill(name)
        self.spawn(name)
        self.wait_up([name], timeout)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGCONT)
                    proc.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
