"""The partition harness itself (bbd/netns.py): cuts drop every port in both directions,
the observer is never cut, healing restores the links, and nothing is left behind. Needs
root, as in CI: elsewhere these tests fail with the reason, they are never skipped."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from bbd import netns
from bbd.localcluster import wait_for
from bbd.netns import Network

PORTS = (7001, 7002)

LISTENER = """
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in sys.argv[2:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(port)))
    s.listen()
    sel.register(s, selectors.EVENT_READ)
print("listening", flush=True)
while True:
    for key, _ in sel.select():
        key.fileobj.accept()[0].close()
"""

PROBE = """
import socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[3]))
print(s.connect_ex((sys.argv[1], int(sys.argv[2]))))
"""


@pytest.fixture
def net() -> Iterator[Network]:
    why = netns.unavailable()
    if why:
        pytest.fail(f"{why}. CI runs these tests as root; they are never skipped.",
                    pytrace=False)
    n = Network()
    procs = []
    try:
        for node in ("a", "b", "c"):
            address = n.add(node)
            p = subprocess.Popen(n.exec_argv(node, [sys.executable, "-c", LISTENER, address,
                                                    *map(str, PORTS)]),
                                 stdout=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stdout.readline().strip() == "listening"
        yield n
    finally:
        for p in procs:
            p.kill()
            p.wait()
        n.close()


Link = tuple[str | None, str, int]  # from (None: the observer), to, port


def reached(net: Network, links: list[Link]) -> set[Link]:
    """The links a TCP connection gets through, all probed at once (a cut one takes the
    whole timeout)."""
    procs = []
    for src, dst, port in links:
        argv = [sys.executable, "-c", PROBE, net.address(dst), str(port), "0.5"]
        procs.append(subprocess.Popen(argv if src is None else net.exec_argv(src, argv),
                                      stdout=subprocess.PIPE, text=True))
    return {link for link, p in zip(links, procs, strict=True)
            if p.communicate()[0].strip() == "0"}


def check(net: Network, up: list[tuple[str | None, str]], down: list[tuple[str, str]]) -> None:
    links = [(a, b, port) for a, b in up + down for port in PORTS]
    got = reached(net, links)
    assert {(a, b) for a, b, _ in got} == set(up) and len(got) == len(up) * len(PORTS), \
        f"expected only {up} (every port) to get through, got {sorted(got, key=str)}"


def test_isolate_drops_every_port_both_ways_and_heal_restores(net: Network) -> None:
    everyone = [("a", "b"), ("b", "a"), ("c", "a"), ("b", "c"), ("c", "b"), (None, "a")]
    check(net, up=everyone, down=[])
    net.isolate("a")
    # The observer (the test process) is never cut: it still reads the lone node.
    check(net, up=[("b", "c"), ("c", "b"), (None, "a")],
          down=[("a", "b"), ("b", "a"), ("c", "a"), ("a", "c")])
    net.heal()
    check(net, up=everyone, down=[])
    assert "DROP" not in net.rules("a")


def test_partition_groups_and_nodes_left_out(net: Network) -> None:
    net.partition(["a"], ["b"])  # c in no group: linked to both sides
    check(net, up=[("a", "c"), ("c", "b")], down=[("a", "b"), ("b", "a")])
    net.partition(["a", "b"], ["c"])  # replaces the previous partition
    check(net, up=[("a", "b"), ("b", "a")], down=[("b", "c"), ("c", "a")])


def test_one_way_cut_drops_at_both_ends(net: Network) -> None:
    net.cut("a", "b", both=False)
    a_rules, b_rules = net.rules("a"), net.rules("b")
    assert f"-A OUTPUT -d {net.address('b')}/32 -j DROP" in a_rules
    assert f"-A INPUT -s {net.address('a')}/32 -j DROP" in b_rules
    assert "INPUT" not in a_rules.replace("-P INPUT", "")
    check(net, up=[("a", "c")], down=[("a", "b")])
    with pytest.raises(ValueError):
        net.cut("a", "nowhere")


def test_close_leaves_nothing_behind() -> None:
    why = netns.unavailable()
    if why:
        pytest.fail(why, pytrace=False)
    n = Network()
    n.add("x")
    sleeper = subprocess.Popen(n.exec_argv("x", ["sleep", "60"]))
    n.close()
    assert sleeper.wait(5) == -9, "a process left in a namespace is killed"
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert n.tag not in names
    link = subprocess.run(["ip", "link", "show", n.uplink], capture_output=True)
    assert link.returncode != 0, "the observer's link is deleted"


def test_namespaces_of_a_dead_run_are_swept() -> None:
    why = netns.unavailable()
    if why:
        pytest.fail(why, pytrace=False)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no longer running: its run was killed before it cleaned up
    stale = f"{netns.PREFIX}-{gone.pid}-abcdef-servidor-1"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        Network().close()
        wait_for(lambda: stale not in subprocess.run(["ip", "netns", "list"],
                                                     capture_output=True, text=True).stdout,
                 5, "the stale namespace to be removed")
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)
