"""Network partitions for tests: one network namespace per daemon, cuts made with iptables.

Every node (a daemon: reference, proxy, a broker, a server) gets its own namespace with one
veth link to a bridge that lives in a private "switch" namespace. The test process stays in
the root namespace, on the same bridge as an observer that is never cut: it reaches every
broker and reads every server's status while the servers cannot reach each other. All
addresses are in one private /24 chosen per run, so no packet leaves the namespaces made
here.

A cut drops every packet between two nodes (all ports, TCP connections included) with
iptables DROP rules in both nodes' namespaces, outgoing at the sender and incoming at the
receiver. Healing removes the rules: established connections resume once TCP retransmits,
as they would after a real network fault. ``partition``, ``isolate``, ``cut`` and ``heal``
can be called in any order, from any thread of the test (one at a time).

``NetCluster`` runs a real cluster on such a network.

Needs root, iproute2 (``ip netns``, veth, bridge) and iptables. Names carry the owner's
pid and a random tag, so parallel runs never collide and a later run removes what a killed
one left behind.
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bbd import config
from bbd.launcher import Daemon
from bbd.localcluster import Cluster

PREFIX = "bbdnet"
# Names and subnets must differ between runs even when a test seeds the global random.
_rng = random.SystemRandom()


class NetnsUnavailable(RuntimeError):
    """This machine cannot run namespace tests (not root, or tools missing)."""


def unavailable() -> str | None:
    """Why namespace tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "network namespace tests need root (ip netns, veth, iptables)"
    missing = [tool for tool in ("ip", "iptables", "iptables-restore") if not shutil.which(tool)]
    if missing:
        return (f"network namespace tests need {', '.join(missing)} "
                "(Debian packages iproute2 and iptables: run 'make install' as root)")
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"'ip netns' does not work here: {probe.stderr.strip()}"
    return None


def _run(*argv: str, stdin: str | None = None, check: bool = True) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise NetnsUnavailable(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the root namespace already routes or holds an address in."""
    nets = []
    for entry in json.loads(_run("ip", "-j", "-4", "route", "show", "table", "all") or "[]"):
        dst = entry.get("dst", "default")
        if dst != "default":
            nets.append(ipaddress.ip_network(dst, strict=False))
    for link in json.loads(_run("ip", "-j", "-4", "addr", "show") or "[]"):
        for a in link.get("addr_info", []):
            nets.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
    return nets


def _free_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    for _ in range(200):
        net = ipaddress.ip_network(f"10.{_rng.randrange(64, 255)}.{_rng.randrange(256)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise NetnsUnavailable("no free private /24 for the test network")


def sweep_stale() -> None:
    """Remove namespaces left by runs whose process is gone (killed before cleaning up)."""
    for line in _run("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if len(parts) < 4 or parts[0] != PREFIX or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
            continue  # its owner is alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        _kill_inside(name)
        _run("ip", "netns", "del", name, check=False)


def _kill_inside(netns: str) -> None:
    """SIGKILL the processes a run started in its own namespace (by their pids)."""
    for pid in _run("ip", "netns", "pids", netns, check=False).split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _filter_table(rules: list[str]) -> str:
    """``iptables-restore`` input that replaces the whole filter table."""
    return "\n".join(["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]",
                      ":OUTPUT ACCEPT [0:0]", *rules, "COMMIT", ""])


class Network:
    """A bridge, one namespace per node, and the cuts between nodes."""

    def __init__(self) -> None:
        unavailable_why = unavailable()
        if unavailable_why:
            raise NetnsUnavailable(unavailable_why)
        sweep_stale()
        self.tag = f"{os.getpid()}-{_rng.getrandbits(24):06x}"
        self.subnet = _free_subnet()
        hosts = self.subnet.hosts()
        self.observer = str(next(hosts))  # the root namespace's address on the bridge
        self._hosts = hosts
        self.nodes: dict[str, str] = {}
        self.blocked: set[tuple[str, str]] = set()  # (from, to): packets dropped
        self._rules: dict[str, str] = {}
        self._made: list[str] = []
        self._closed = False
        self.uplink = f"bbd{self.tag.split('-')[1]}"
        atexit.register(self.close)
        try:
            self._make_switch()
        except BaseException:
            self.close()
            raise

    # -- building ----------------------------------------------------------------------

    def netns(self, node: str) -> str:
        return f"{PREFIX}-{self.tag}-{node}"

    def _new_netns(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self._made.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")

    def _make_switch(self) -> None:
        sw = self.netns("switch")
        self._new_netns(sw)
        _run("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", sw, "link", "set", "br0", "up")
        # The observer's link: created in the root namespace with its peer in the switch.
        # It disappears with the switch namespace.
        _run("ip", "link", "add", self.uplink, "type", "veth", "peer", "name", "uplink",
             "netns", sw)
        _run("ip", "-n", sw, "link", "set", "uplink", "master", "br0", "up")
        _run("ip", "addr", "add", f"{self.observer}/{self.subnet.prefixlen}", "dev", self.uplink)
        _run("ip", "link", "set", self.uplink, "up")

    def add(self, node: str) -> str:
        """A new node on the bridge; its address."""
        if node in self.nodes or node == "switch":
            raise ValueError(f"node {node!r} already exists")
        address = str(next(self._hosts))
        ns, sw = self.netns(node), self.netns("switch")
        port = f"p{len(self.nodes)}"
        self._new_netns(ns)
        _run("ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0",
             "netns", ns)
        _run("ip", "-n", sw, "link", "set", port, "master", "br0", "up")
        _run("ip", "-n", ns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        self.nodes[node] = address
        return address

    def address(self, node: str) -> str:
        return self.nodes[node]

    def exec_argv(self, node: str, argv: list[str]) -> list[str]:
        """``argv`` run inside ``node``'s namespace (``ip netns exec`` replaces itself with
        the command, so the pid is the command's own)."""
        return ["ip", "netns", "exec", self.netns(node), *argv]

    # -- cutting and healing -----------------------------------------------------------

    def cut(self, a: str, b: str, both: bool = True) -> None:
        """Drop every packet from ``a`` to ``b`` (and from ``b`` to ``a`` if ``both``)."""
        self._check([a, b])
        self.blocked.add((a, b))
        if both:
            self.blocked.add((b, a))
        self._apply()

    def partition(self, *groups: Iterable[str]) -> None:
        """Replace every cut by a partition: nodes in different groups cannot exchange a
        packet in either direction; nodes in no group keep every link."""
        sides = [list(g) for g in groups]
        self._check([n for g in sides for n in g])
        self.blocked = {(a, b) for i, g in enumerate(sides) for a in g
                        for j, h in enumerate(sides) if i != j for b in h}
        self._apply()

    def isolate(self, node: str) -> None:
        """Cut ``node`` off from every other node, both directions."""
        self.partition([node], [n for n in self.nodes if n != node])

    def heal(self) -> None:
        self.blocked = set()
        self._apply()

    def _check(self, nodes: list[str]) -> None:
        unknown = [n for n in nodes if n not in self.nodes]
        if unknown:
            raise ValueError(f"unknown nodes {unknown}; known: {sorted(self.nodes)}")
        if len(set(nodes)) != len(nodes):
            raise ValueError(f"a node appears twice in {nodes}")

    def _apply(self) -> None:
        """Load each changed namespace's rules in one atomic ``iptables-restore``."""
        for node in self.nodes:
            rules = [f"-A OUTPUT -d {self.nodes[b]}/32 -j DROP"
                     for a, b in sorted(self.blocked) if a == node]
            rules += [f"-A INPUT -s {self.nodes[a]}/32 -j DROP"
                      for a, b in sorted(self.blocked) if b == node]
            table = _filter_table(rules)
            if self._rules.get(node, _filter_table([])) == table:
                continue
            _run("ip", "netns", "exec", self.netns(node), "iptables-restore", stdin=table)
            self._rules[node] = table

    def rules(self, node: str) -> str:
        """The filter rules in force in ``node``'s namespace, as iptables prints them."""
        return _run("ip", "netns", "exec", self.netns(node), "iptables", "-S")

    # -- cleaning up ---------------------------------------------------------------------

    def close(self) -> None:
        """Delete every namespace (their links go with them). Processes still running in
        them are killed first: a namespace with processes outlives its name."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        if self._made:  # at once, not when the kernel gets round to the switch namespace
            _run("ip", "link", "del", self.uplink, check=False)
        for ns in reversed(self._made):
            _kill_inside(ns)
            _run("ip", "netns", "del", ns, check=False)
        self._made.clear()


@dataclass
class _NsDaemon(Daemon):
    prefix: list[str] = field(default_factory=list)

    def argv(self) -> list[str]:
        return [*self.prefix, *super().argv()]


class NetCluster(Cluster):
    """A ``Cluster`` whose daemons each run in their own namespace of ``self.net``, all on
    the standard ports (each namespace is its own host). ``brokers`` > 1 adds brokers
    ``broker-2``...; ``broker_of`` says which one a server takes its clients from (default
    ``broker``), so each side of a split can have clients of its own."""

    def __init__(self, root: Path, servers: int = 3, brokers: int = 1,
                 broker_of: dict[str, str] | None = None, skews: list[float] | None = None,
                 server_args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        # The layout's data directories, server names and skews are used; its ports are not.
        super().__init__(root, servers=servers, skews=skews, server_args=server_args, env=env)
        self.brokers = ["broker", *(f"broker-{k}" for k in range(2, brokers + 1))]
        self.broker_of = broker_of or {}
        unknown = set(self.broker_of.values()) - set(self.brokers)
        if unknown:
            raise ValueError(f"broker_of names unknown brokers {sorted(unknown)}")
        self.net = Network()
        try:
            for name in self.daemon_names():
                self.net.add(name)
        except BaseException:
            self.net.close()
            raise

    def daemon_names(self) -> list[str]:
        return ["reference", "proxy", *self.brokers, *self.names()]

    # -- addresses -------------------------------------------------------------------
    def url(self, node: str, port_name: str) -> str:
        return f"tcp://{self.net.address(node)}:{config.port(port_name)}"

    def frontend_of(self, broker: str) -> str:
        return self.url(broker, "frontend")

    @property
    def frontend(self) -> str:
        return self.frontend_of("broker")

    @property
    def xpub(self) -> str:
        return self.url("proxy", "xpub")

    @property
    def reference(self) -> str:
        return self.url("reference", "reference")

    def sync_endpoint(self, name: str) -> str:
        return self.url(name, "sync")

    def relay_port(self, name: str) -> tuple[str, int] | None:
        if name == "proxy":
            return self.net.address(name), config.port("xpub")
        if name in self.brokers:
            return self.net.address(name), config.port("frontend")
        return None

    # -- processes -------------------------------------------------------------------
    def _daemon(self, name: str) -> Daemon:
        d = self.layout.data / name
        if name == "reference":
            args = ["--listen", self.reference, "--data", str(d)]
            plugin = "bbd-reference"
        elif name == "proxy":
            args = ["--xsub", self.url("proxy", "xsub"), "--xpub", self.xpub]
            plugin = "bbd-proxy"
        elif name in self.brokers:
            args = ["--frontend", self.frontend_of(name),
                    "--backend", self.url(name, "backend")]
            plugin = "bbd-broker"
        else:
            broker = self.broker_of.get(name, "broker")
            args = ["--name", name, "--data", str(d), "--bind", self.net.address(name),
                    "--broker", self.url(broker, "backend"),
                    "--publish", self.url("proxy", "xsub"), "--subscribe", self.xpub,
                    "--reference", self.reference]
            i = self.names().index(name)
            if i < len(self.layout.skews) and self.layout.skews[i]:
                args += ["--clock-skew", str(self.layout.skews[i])]
            args += self.server_args
            plugin = "bbd-server"
        args += self.layout.auth_args()  # the board's keys, as in every cluster
        return _NsDaemon(name, plugin, args, d, prefix=self.net.exec_argv(name, []))

    def start(self, timeout: float = 30) -> NetCluster:
        for name in self.daemon_names():
            self.spawn(name)
        self.wait_up(self.daemon_names(), timeout)
        return self

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.net.close()
