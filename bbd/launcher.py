"""``bbd up``: the whole board on one machine, each daemon its own ``twistd -n`` process.

Before anything starts, every port the board will bind is checked: a busy one stops the
launcher with one line. Twisted's ProcessMonitor then supervises the daemons: a daemon that
dies is started again (with its back-off) and said so on the console; one that keeps dying
right after it starts is given up on. Stopping the launcher (Ctrl-C, SIGTERM) stops every
daemon, killing any that does not stop in time.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bbd import config, supervision

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
    broker_status: int = field(default_factory=lambda: config.port("broker_status"))
    routing: str = "readiness"  # the broker's; "round-robin" is today's plain relay
    dashboard: int = 0  # the dashboard's HTTP port (0: no dashboard)
    metrics_base: int = 0  # server i serves /metrics on metrics_base + i - 1 (0: off)
    keys: Path | None = None  # the board's CURVE keys; None: authentication off (--no-auth)

    @classmethod
    def at_base(cls, data: Path, base: int, **kw: Any) -> Layout:
        """Every port moved together: the standard ports' offsets from the frontend's
        (etc/bbd.toml), added to ``base``."""
        def at(name: str) -> int:
            return base + config.port(name) - config.port("frontend")
        return cls(data, frontend=base, backend=at("backend"), xsub=at("xsub"),
                   xpub=at("xpub"), reference=at("reference"), server_base=at("sync"),
                   broker_status=at("broker_status"), **kw)

    def ports(self) -> list[tuple[str, int]]:
        """Every port the board binds, with whose it is."""
        out = [("broker frontend", self.frontend), ("broker backend", self.backend),
               ("proxy XSUB", self.xsub), ("proxy XPUB", self.xpub),
               ("reference", self.reference), ("broker status", self.broker_status)]
        for i in range(1, self.servers + 1):
            sync, repl = self.server_ports(i)
            name = self.server_name(i)
            out += [(f"{name} sync", sync), (f"{name} replication", repl)]
        return out

    def web_ports(self) -> list[tuple[str, int]]:
        """The HTTP ports: the dashboard's and the servers' metrics, when on."""
        out = [("dashboard", self.dashboard)] if self.dashboard else []
        if self.metrics_base:
            out += [(f"{self.server_name(i)} metrics", self.metrics_base + i - 1)
                    for i in range(1, self.servers + 1)]
        return out

    def span(self) -> int:
        """How many ports from the frontend's up the board occupies."""
        return max(p for _, p in self.ports()) - self.frontend + 1

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
                                               "--backend", self.url(self.backend),
                                               "--status", self.url(self.broker_status),
                                               "--routing", self.routing,
                                               *self.auth_args()],
                      self.data / "broker")

    def server_daemon(self, i: int, extra: list[str] | None = None) -> Daemon:
        name = self.server_name(i)
        d = self.data / name
        sync, repl = self.server_ports(i)
        args = ["--name", name, "--data", str(d), "--bind", self.host,
                "--broker", self.url(self.backend), "--publish", self.url(self.xsub),
                "--subscribe", self.url(self.xpub), "--reference", self.url(self.reference),
                "--sync-port", str(sync), "--replication-port", str(repl), *self.auth_args()]
        if self.routing != "readiness":
            args += ["--routing", self.routing]
        if i <= len(self.skews) and self.skews[i - 1]:
            args += ["--clock-skew", str(self.skews[i - 1])]
        if self.metrics_base:
            args += ["--metrics-port", str(self.metrics_base + i - 1)]
        return Daemon(name, "bbd-server", args + (extra or []), d)

    def dashboard_daemon(self, demo_control: str | None = None) -> Daemon:
        args = ["--port", str(self.dashboard), "--interface", self.host,
                "--reference", self.url(self.reference), "--subscribe", self.url(self.xpub),
                "--broker", self.url(self.frontend), *self.auth_args()]
        if demo_control:
            args += ["--demo-control", demo_control]
        return Daemon("dashboard", "bbd-dashboard", args, self.data / "dashboard")

    def dashboard_url(self) -> str:
        host = "localhost" if self.host == "127.0.0.1" else self.host
        return f"http://{host}:{self.dashboard}/"

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


# Each child leads its own process group: Ctrl-C in the terminal reaches only the launcher,
# which stops the daemons itself, each once (a second signal makes twistd log a traceback).
_OWN_GROUP = "import os, sys; os.setpgid(0, 0); os.execv(sys.argv[1], sys.argv[1:])"


def own_group(argv: list[str]) -> list[str]:
    return [sys.executable, "-c", _OWN_GROUP, *argv]


def _typed(exe: Path) -> str:
    """A program's path as a person would type it from here."""
    here = Path.cwd()
    return f"./{exe.relative_to(here)}" if exe.is_relative_to(here) else str(exe)


def client_command(layout: Layout) -> str:
    """The C client's command line for this board."""
    return (f"BROKER={layout.url(layout.frontend)} PROXY={layout.url(layout.xpub)} "
            f"{_typed(REPO / 'clients' / 'c' / 'cliente')}")


def status_command(layout: Layout) -> str:
    """``bbd status`` for this board (bbd lives beside this interpreter, in the venv)."""
    bbd = Path(sys.executable).parent / "bbd"
    moved = layout.frontend != config.port("frontend")
    return (f"{_typed(bbd) if bbd.exists() else 'bbd'} status"
            + (f" --base-port {layout.frontend}" if moved else ""))


def check_ports(layout: Layout) -> str | None:
    """None if every port is free, else the one line saying which is not."""
    busy = supervision.busy_ports(layout.ports() + layout.web_ports(), layout.host)
    if not busy:
        return None
    return supervision.busy_message(busy, layout.host, layout.frontend, layout.span())


def _console(event: dict) -> bool:
    """Console filter: procmon turns the end of a child's output into an empty line."""
    return not (event.get("log_format") == "[{tag}] {line}" and not event.get("line"))


def run(layout: Layout, bots: int, bot_interval: float, demo: bool = False) -> int:
    problem = check_ports(layout)
    if problem:
        print(problem, file=sys.stderr, flush=True)
        return 1
    if layout.keys is not None:  # made on first start, once the ports are known free
        from bbd import auth

        auth.create(layout.keys)
    from twisted.internet import reactor
    from twisted.logger import (
        FilteringLogObserver,
        Logger,
        PredicateResult,
        globalLogBeginner,
        textFileLogObserver,
    )

    console = FilteringLogObserver(
        textFileLogObserver(sys.stdout),
        [lambda e: PredicateResult.maybe if _console(e) else PredicateResult.no])
    # Our own lines stay plain prints: stdout is not redirected into the log.
    globalLogBeginner.beginLoggingTo([console], redirectStandardIO=False)
    log = Logger()
    monitor = Supervisor(log)
    env = dict(os.environ)
    rows = []
    daemons = layout.daemons()
    control = None
    if layout.dashboard:
        if demo:
            from bbd import demo as demo_mode

            servers = {d.name: demo_mode.Managed(own_group(d.argv()), env, str(d.directory))
                       for d in daemons if d.plugin == "bbd-server"}
            control = demo_mode.listen(monitor, servers, reactor)
        daemons.append(layout.dashboard_daemon(control))
    for daemon in daemons:
        daemon.directory.mkdir(parents=True, exist_ok=True)
        monitor.addProcess(daemon.name, own_group(daemon.argv()), env=env,
                           cwd=str(daemon.directory))
        monitor.logs[daemon.name] = daemon.directory / "twistd.log"
        rows.append((daemon.name, " ".join(daemon.args[:4]), str(daemon.directory)))
    bot_names: list[str] = []
    if bots:
        argv = bot_argv(layout, bot_interval)
        if argv is None:
            log.warn("bots requested but node or clients/js/bot.js is missing: no bots")
        for k in range(1, bots + 1 if argv else 1):
            bot_names.append(f"bot-{k}")
            rows.append((f"bot-{k}", f"--broker {layout.url(layout.frontend)}",
                         "(output here, once the servers serve)"))
    print("BulletInBoard is starting:")
    for name, where, directory in rows:
        print(f"  {name:<12} {where:<60} {directory}")
    print(f"Clients: broker {layout.url(layout.frontend)}, "
          f"subscriptions {layout.url(layout.xpub)}")
    print(f"C client: {client_command(layout)}")
    print(f"Status: {status_command(layout)}")
    if layout.dashboard:
        print(f"Dashboard: {layout.dashboard_url()}"
              + (" (demo mode: pause/resume/kill/restart buttons)" if control else ""))
    if layout.metrics_base:
        last = layout.metrics_base + layout.servers - 1
        print(f"Metrics: servers on http://{layout.host}:{layout.metrics_base}-{last}/metrics"
              + (f", dashboard on {layout.dashboard_url()}metrics" if layout.dashboard else ""))
    print(f"Logs: {layout.data}/<name>/twistd.log. Ctrl-C stops everything.", flush=True)
    monitor.startService()
    stopping = threading.Event()
    reactor.addSystemEventTrigger("before", "shutdown", stopping.set)
    reactor.addSystemEventTrigger("before", "shutdown", stop_all, monitor, reactor)

    def ready(took: float | None) -> None:
        # Bots start once every server serves: a bot started earlier fails its first login.
        if stopping.is_set():
            return
        if took is None:
            log.warn("the servers are not all serving after {s:.0f} s; starting anyway "
                     "(see {data}/servidor-*/twistd.log)", s=READY_TIMEOUT, data=layout.data)
        else:
            print(f"BulletInBoard is ready in {took:.1f} s: {layout.servers} servers serving.",
                  flush=True)
        for name in bot_names:
            monitor.addProcess(name, own_group(argv), env=env)

    from twisted.internet import threads

    threads.deferToThread(wait_ready, layout, READY_TIMEOUT, stopping).addCallback(ready)
    # The daemons no longer share our process group: a closed terminal must stop them too.
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(reactor.stop))
    reactor.run()
    return 0


READY_TIMEOUT = 60.0


def wait_ready(layout: Layout, timeout: float, stopping: threading.Event) -> float | None:
    """Seconds until every server says it is ready (asked on its sync port), or None after
    ``timeout``. Blocking: runs in a thread; gives up at once when ``stopping`` is set."""
    from bbd import auth
    from bbd.client import ask_once

    # The sync port takes only the board's own processes when authentication is on.
    security = auth.client_options(auth.load(layout.keys)) if layout.keys is not None else None
    began = time.monotonic()
    endpoints = [layout.url(layout.server_ports(i)[0]) for i in range(1, layout.servers + 1)]
    waiting = list(endpoints)
    while waiting and not stopping.is_set():
        if time.monotonic() - began > timeout:
            return None
        status = ask_once(waiting[0], "status", timeout=0.5, security=security)
        if status and status.get("ready"):
            waiting.pop(0)
        else:
            stopping.wait(0.2)  # poll interval; the answer is what is waited on
    return time.monotonic() - began


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


def _supervisor_class() -> type:
    from twisted.runner.procmon import ProcessMonitor

    class Supervisor(ProcessMonitor):
        """ProcessMonitor that says on the console when a daemon dies, and gives up on one
        that keeps dying right after it starts (a busy port, a broken configuration)."""

        def __init__(self, log: Any) -> None:
            super().__init__()
            # A daemon that runs a second counts as started: restart fast, back off to 5 s.
            self.threshold, self.minRestartDelay, self.maxRestartDelay = 1, 0.5, 5
            self.console = log
            self.watch = supervision.CrashWatch()
            self.logs: dict[str, Path] = {}
            self.log_from: dict[str, int] = {}

        def _monitoredProcessExited(self, name: str, reason: Any = None) -> None:
            # procmon's own hook for an exit (its public connectionLost is no longer called).
            uptime = self._clock.seconds() - self.timeStarted.get(name, 0.0)
            if self.running and name in self._processes:
                self._report(name, uptime, reason)
            super()._monitoredProcessExited(name, reason)

        def startProcess(self, name: str) -> None:
            log_file = self.logs.get(name)
            # Only what this run writes explains its death, not an older run's error.
            self.log_from[name] = log_file.stat().st_size if log_file and \
                log_file.exists() else 0
            super().startProcess(name)

        def _report(self, name: str, uptime: float, reason: Any) -> None:
            value = getattr(reason, "value", None)
            code, sig = getattr(value, "exitCode", None), getattr(value, "signal", None)
            how = f"was killed by signal {sig}" if sig else f"exited with code {code}"
            log_file = self.logs.get(name)
            error = None
            if log_file is not None and log_file.exists():
                with log_file.open("rb") as f:
                    f.seek(self.log_from.get(name, 0))
                    error = supervision.last_error(f.read().decode("utf-8", "replace"))
            verdict = self.watch.exited(name, uptime, how, error,
                                        str(log_file) if log_file else None)
            self.console.warn("{line}", line=verdict.line)
            if verdict.give_up:
                # Out of procmon's table: it will not schedule another start.
                self._processes.pop(name, None)

    return Supervisor


def Supervisor(log: Any) -> Any:  # noqa: N802 - reads as the class it builds
    """A ProcessMonitor subclass, defined on first use (procmon imports the reactor)."""
    return _supervisor_class()(log)
