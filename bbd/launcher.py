"""``bbd up``: the whole board on one machine, each daemon its own ``twistd -n`` process.

Twisted's ProcessMonitor supervises them: a daemon that dies is started again (with its
back-off), and stopping the launcher (Ctrl-C, SIGTERM) stops every daemon, killing any
that does not stop in time.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bbd import config

REPO = Path(__file__).resolve().parent.parent


def twistd() -> str:
    """The twistd of this interpreter's environment (the one that has our plugins)."""
    beside = Path(sys.executable).parent / "twistd"
    return str(beside) if beside.exists() else (shutil.which("twistd") or "twistd")


@dataclass
class Daemon:
    name: str
    plugin: str
    args: list[str]
    directory: Path

    def argv(self) -> list[str]:
        return [twistd(), "-n",
                "--pidfile", str(self.directory / "twistd.pid"),
                "--logfile", str(self.directory / "twistd.log"),
                self.plugin, *self.args]


@dataclass
class Layout:
    """Where each daemon listens; ports default to the standard ones of etc/bbd.toml."""

    data: Path
    servers: int = 3
    host: str = "127.0.0.1"
    frontend: int = field(default_factory=lambda: config.port("frontend"))
    backend: int = field(default_factory=lambda: config.port("backend"))
    xsub: int = field(default_factory=lambda: config.port("xsub"))
    xpub: int = field(default_factory=lambda: config.port("xpub"))
    reference: int = field(default_factory=lambda: config.port("reference"))
    server_base: int = field(default_factory=lambda: config.port("sync"))
    skews: list[float] = field(default_factory=list)
    keys: Path | None = None  # the board's CURVE keys; None: authentication off (--no-auth)

    def url(self, port: int) -> str:
        return f"tcp://{self.host}:{port}"

    def server_ports(self, i: int) -> tuple[int, int]:
        """(sync, replication) of server ``i`` (1-based): consecutive pairs."""
        sync = self.server_base + 2 * (i - 1)
        return sync, sync + 1

    def server_name(self, i: int) -> str:
        return f"servidor-{i}"

    def auth_args(self) -> list[str]:
        """For the daemons with internal ports (SecureDaemonOptions)."""
        return ["--keys", str(self.keys)] if self.keys is not None else ["--no-auth"]

    def reference_daemon(self) -> Daemon:
        d = self.data / "reference"
        return Daemon("reference", "bbd-reference",
                      ["--listen", self.url(self.reference), "--data", str(d),
                       *self.auth_args()], d)

    def proxy_daemon(self) -> Daemon:
        return Daemon("proxy", "bbd-proxy", ["--xsub", self.url(self.xsub),
                                             "--xpub", self.url(self.xpub), *self.auth_args()],
                      self.data / "proxy")

    def broker_daemon(self) -> Daemon:
        return Daemon("broker", "bbd-broker", ["--frontend", self.url(self.frontend),
                                               "--backend", self.url(self.backend)],
                      self.data / "broker")

    def server_daemon(self, i: int, extra: list[str] | None = None) -> Daemon:
        name = self.server_name(i)
        d = self.data / name
        sync, repl = self.server_ports(i)
        args = ["--name", name, "--data", str(d), "--bind", self.host,
                "--broker", self.url(self.backend), "--publish", self.url(self.xsub),
                "--subscribe", self.url(self.xpub), "--reference", self.url(self.reference),
                "--sync-port", str(sync), "--replication-port", str(repl), *self.auth_args()]
        if i <= len(self.skews) and self.skews[i - 1]:
            args += ["--clock-skew", str(self.skews[i - 1])]
        return Daemon(name, "bbd-server", args + (extra or []), d)

    def daemons(self) -> list[Daemon]:
        return [self.reference_daemon(), self.proxy_daemon(), self.broker_daemon(),
                *(self.server_daemon(i) for i in range(1, self.servers + 1))]


def bot_argv(layout: Layout, interval: float) -> list[str] | None:
    node = shutil.which("node")
    script = REPO / "clients" / "js" / "bot.js"
    if node is None or not script.exists():
        return None
    return [node, str(script), "--broker", layout.url(layout.frontend),
            "--proxy", layout.url(layout.xpub), "--interval", str(interval)]


def run(layout: Layout, bots: int, bot_interval: float) -> int:
    from twisted.internet import reactor
    from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
    from twisted.runner.procmon import ProcessMonitor

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    log = Logger()
    monitor = ProcessMonitor()
    monitor.threshold = 1  # a daemon that runs a second counts as started: restart fast
    monitor.minRestartDelay = 0.5
    monitor.maxRestartDelay = 5
    env = dict(os.environ)
    rows = []
    for daemon in layout.daemons():
        daemon.directory.mkdir(parents=True, exist_ok=True)
        monitor.addProcess(daemon.name, daemon.argv(), env=env, cwd=str(daemon.directory))
        rows.append((daemon.name, " ".join(daemon.args[:4]), str(daemon.directory)))
    if bots:
        argv = bot_argv(layout, bot_interval)
        if argv is None:
            log.warn("bots requested but node or clients/js/bot.js is missing: no bots")
        for k in range(1, bots + 1 if argv else 1):
            monitor.addProcess(f"bot-{k}", argv, env=env)
            rows.append((f"bot-{k}", f"--broker {layout.url(layout.frontend)}", "(output here)"))
    print("BulletInBoard is starting:")
    for name, where, directory in rows:
        print(f"  {name:<12} {where:<60} {directory}")
    print(f"Clients: broker {layout.url(layout.frontend)}, "
          f"subscriptions {layout.url(layout.xpub)}")
    print("Logs: <dir>/<name>/twistd.log. Ctrl-C stops everything.", flush=True)
    monitor.startService()
    reactor.addSystemEventTrigger("before", "shutdown", stop_all, monitor, reactor)
    reactor.run()
    return 0


def stop_all(monitor: Any, clock: Any) -> Any:
    """Stop every daemon and wait until all have exited (procmon's stopService only sends
    SIGTERM, and kills stragglers after its killTime)."""
    from twisted.internet import defer

    monitor.stopService()
    done: defer.Deferred = defer.Deferred()

    def check() -> None:
        if monitor.protocols:
            clock.callLater(0.05, check)
        else:
            done.callback(None)

    check()
    return done
