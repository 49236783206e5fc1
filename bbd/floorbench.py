"""The floor of the write path on this stack: the board's message pattern without the board.

Issue 11 asks three replicated servers for half the echo limit's writes per second. This
benchmark answers whether any board built on this design card could get there: Python,
Twisted daemons, txZMQ/pyzmq sockets with CURVE (``bbd.sockets``, ``bbd.auth``), every write
fsync'd on every live replica before its reply, three replicas, all on one 2-core machine
with the broker and the load generator. Side by side, in alternating rounds, with
scalebench's own load generator, broker and keys:

- ``echo``: scalebench's pyzmq echo worker (the limit).
- ``twisted echo``: one Twisted process with our ``BrokerWorker`` answering every request
  with the same constant ``OK``: the cost of Twisted and our socket adapter per hop.
- ``floor, 3 nodes, fsync``: three Twisted processes, each a broker worker, each bound to a
  ``RouterServer`` and linked to the other two by ``DealerClient``s (CURVE, as the servers).
  A request appends a fixed record; at the end of the reactor turn the turn's records are
  written and fsync'd once (group commit); the turn's records then go to both peers in one
  message (one round out at a time, what became durable meanwhile goes in the next); a peer
  appends and fsyncs them at the end of its turn and acks; both acks reply to the round.
- ``floor, 3 nodes, no fsync``: the same without the fsync (the disk's share).
- ``floor, 3 nodes, fsync, replicate first``: a round leaves before the local fsync (the
  peers' fsyncs overlap the origin's; a reply still waits for all three), as issue 11
  suggests for the board.
- ``floor, 3 nodes, fsync, replicate first, preallocated``: and the journals written over
  zeroed files with ``fdatasync`` (no metadata per sync): the leanest this stack allows.
- ``floor, 1 node, fsync``: group commit alone, no peers.

It is a floor because it does only what the durability contract and the message pattern
force on every write (a broker hop, one journal write and fsync per turn, one peer message
per round and its ack, one reply), with plain callbacks, one msgpack call per round, no
parsing of the client's request, no state, no logging: the board does all of this and more,
so it cannot be faster than this on the same machine.

    python -m bbd.floorbench [--clients 1 16] [--seconds 4] [--rounds 3] [--procs 4]
                             [--no-single] [--board] [--only TEXT...]

``--board`` adds the board itself (``bbd.scalebench``'s three servers) to the same rounds:
how far above its floor it is, in one run.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from math import nan
from pathlib import Path
from typing import Any

import msgpack
import zmq

from bbd import auth
from bbd.localcluster import Cluster, wait_for
from bbd.scalebench import Echo, Setup, cpu_seconds, load, measure

# The reply of scalebench's echo worker, byte for byte.
REPLY = msgpack.packb({"service": "publish", "data": {
    "status": "OK", "timestamp": 0.0, "clock": 0}}, use_bin_type=True)
# What a node journals per write: about the size of a board's journal line for a post.
RECORD = b"r" * 199 + b"\n"
ACK = b"OK"
STATS = b"stats"  # a request on a node's peer port: its counters, msgpack
CREDIT = 64  # as scalebench's echo worker
HEARTBEAT = 0.25
MAX_BYTES = 16 * 1024 * 1024
PREALLOC = 64 * 1024 * 1024  # journal zeroed ahead, per step (the leanest floor)
ROUND_TIMEOUT = 1.0  # a peer silent this long is asked again (the floor never gives up)


# -- the core: plain Python, time injected ------------------------------------------------

@dataclass
class Counters:
    requests: int = 0  # client writes taken
    replies: int = 0  # client writes answered
    commits: int = 0  # end-of-turn journal writes
    fsyncs: int = 0
    records: int = 0  # journal records written (own and peers')
    rounds: int = 0  # replicate rounds sent
    acks: int = 0  # peers' acks received


class Floor:
    """One node's write path. ``request`` takes a client's write (its envelope),
    ``replicate`` a peer's round; both are journalled at the end of the turn (one write,
    one fsync), then peers' rounds are acked and the own writes go out in the next round.
    ``acked`` is called once per peer per round; the last ack answers the round.
    ``early``: a round leaves before the local fsync instead of after it (what issue 11
    suggests for the board); a reply still waits for both."""

    def __init__(self, clock: Any, write: Callable[[bytes], None],
                 sync: Callable[[], None] | None, peers: int,
                 send_round: Callable[[bytes], None], reply: Callable[[list[bytes]], None],
                 ack: Callable[[list[bytes]], None], early: bool = False) -> None:
        self.clock, self.write, self.sync, self.peers = clock, write, sync, peers
        self.early = early
        self.send_round, self.reply, self.ack = send_round, reply, ack
        self.counters = Counters()
        self._own: list[list[bytes]] = []  # this turn's writes
        self._foreign: list[bytes] = []  # this turn's records from peers
        self._to_ack: list[list[bytes]] = []  # this turn's peer rounds
        self._outbox: list[list[bytes]] = []  # durable here, waiting for a round
        self._round: list[list[bytes]] | None = None  # the round out, until every ack
        self._missing = 0  # acks the round out still needs
        self._call: Any = None

    def request(self, envelope: list[bytes]) -> None:
        self.counters.requests += 1
        self._own.append(envelope)
        if self._call is None:
            self._call = self.clock.callLater(0, self._commit)

    def replicate(self, envelope: list[bytes], records: list[bytes]) -> None:
        self._foreign += records
        self._to_ack.append(envelope)
        if self._call is None:
            self._call = self.clock.callLater(0, self._commit)

    def _commit(self) -> None:
        self._call = None
        own, foreign, to_ack = self._own, self._foreign, self._to_ack
        self._own, self._foreign, self._to_ack = [], [], []
        self.write(RECORD * len(own) + b"".join(foreign))
        c = self.counters
        c.commits += 1
        c.records += len(own) + len(foreign)
        if self.early and self.peers:
            # Out before the fsync: ZeroMQ's I/O thread sends it while this thread waits
            # for the disk, and the fsync ends before this turn does, so before any ack.
            self._outbox += own
            self._pump()
        if self.sync is not None:
            self.sync()
            c.fsyncs += 1
        for envelope in to_ack:
            self.ack(envelope)
        if not self.peers:
            for envelope in own:
                self.reply(envelope)
            c.replies += len(own)
        elif not self.early:
            self._outbox += own
            self._pump()

    def _pump(self) -> None:
        if self._round is None and self._outbox:
            self._round, self._outbox = self._outbox, []
            self._missing = self.peers
            self.counters.rounds += 1
            self.send_round(msgpack.packb([RECORD] * len(self._round)))

    def acked(self) -> None:
        self.counters.acks += 1
        self._missing -= 1
        if self._missing or self._round is None:
            return
        done, self._round = self._round, None
        for envelope in done:
            self.reply(envelope)
        self.counters.replies += len(done)
        self._pump()

    def stats(self) -> dict[str, int]:
        return dict(vars(self.counters))


# -- the journal ------------------------------------------------------------------------

class Journal:
    """An append-only file. ``prealloc``: written over a file of zeros made (and fsync'd)
    beforehand, ``prealloc`` bytes at a time, so that a write never grows the file and
    ``fdatasync`` has no metadata to commit (as databases keep their log segments); the
    records are as durable, each sync costs less (measured on this disk, 200-600 byte
    records: 0.38 -> 0.21 ms per sync, p50)."""

    def __init__(self, path: str, prealloc: int = 0) -> None:
        self.prealloc = prealloc
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | (0 if prealloc else os.O_APPEND),
                          0o644)
        self.offset = self.size = 0
        if prealloc:
            self._grow()

    def _grow(self) -> None:
        zeros = bytes(1 << 20)
        for at in range(self.size, self.size + self.prealloc, len(zeros)):
            os.pwrite(self.fd, zeros, at)
        self.size += self.prealloc
        os.fsync(self.fd)  # the new length and its blocks, once

    def write(self, data: bytes) -> None:
        if not self.prealloc:
            while data:
                data = data[os.write(self.fd, data):]
            return
        while self.offset + len(data) > self.size:
            self._grow()
        while data:
            n = os.pwrite(self.fd, data, self.offset)
            self.offset += n
            data = data[n:]

    def sync(self) -> None:
        if self.prealloc:
            os.fdatasync(self.fd)
        else:
            os.fsync(self.fd)


# -- the node processes (thin: the core wired to sockets) ---------------------------------

def run_echo_node(broker: str, keys_dir: str) -> None:
    """One Twisted process answering every broker request with the echo's reply."""
    from twisted.internet import reactor

    from bbd import sockets

    keys = auth.load(Path(keys_dir))
    factory = sockets.make_factory()
    worker: Any = None

    def on_request(envelope: list[bytes], body: bytes) -> None:
        worker.reply(envelope, REPLY)

    worker = sockets.BrokerWorker(factory, broker, on_request, name="twisted-echo",
                                  credit=CREDIT, clock=reactor, heartbeat=HEARTBEAT,
                                  ready=True, max_bytes=MAX_BYTES,
                                  security=auth.client_options(keys))
    reactor.addSystemEventTrigger("before", "shutdown", worker.close)
    reactor.run()


def run_floor_node(name: str, broker: str, keys_dir: str, bind: str, peers: list[str],
                   journal: str, fsync: bool, early: bool = False,
                   prealloc: int = 0) -> None:
    from twisted.internet import reactor

    from bbd import sockets

    keys = auth.load(Path(keys_dir))
    factory = sockets.make_factory()
    guard = auth.Guard(factory.context, keys).start()  # before the bind, as the servers
    records = Journal(journal, prealloc)
    outbound = auth.client_options(keys)
    clients = [sockets.DealerClient(factory, url, reactor, MAX_BYTES, outbound)
               for url in peers]

    def send_to(client: Any, body: bytes) -> None:
        d = client.request(body, ROUND_TIMEOUT, connect_wait=ROUND_TIMEOUT)
        # No failover in the floor: a silent peer is asked again until it acks.
        d.addCallbacks(lambda _: core.acked(),
                       lambda _: reactor.callLater(0.01, send_to, client, body))

    def send_round(body: bytes) -> None:
        for client in clients:
            send_to(client, body)

    def on_peer(envelope: list[bytes], body: bytes) -> None:
        if body == STATS:
            router.reply(envelope, msgpack.packb(core.stats()))
        else:
            core.replicate(envelope, msgpack.unpackb(body))

    core = Floor(reactor, records.write, records.sync if fsync else None, len(clients),
                 send_round, lambda envelope: worker.reply(envelope, REPLY),
                 lambda envelope: router.reply(envelope, ACK), early)
    router = sockets.RouterServer(factory, [sockets.bind(bind)], on_peer, MAX_BYTES,
                                  auth.server_options(keys))
    worker = sockets.BrokerWorker(factory, broker, lambda envelope, body: core.request(envelope),
                                  name=name, credit=CREDIT, clock=reactor, heartbeat=HEARTBEAT,
                                  ready=True, max_bytes=MAX_BYTES, security=outbound)

    def stopping() -> None:
        worker.close()
        guard.stop()

    reactor.addSystemEventTrigger("before", "shutdown", stopping)
    reactor.run()


def ask_stats(url: str, keys: auth.Keys | None, timeout: float = 1.0) -> dict | None:
    """A floor node's counters, asked on its peer port with the board's keys."""
    ctx = zmq.Context.instance()
    sock = auth.secure(ctx.socket(zmq.DEALER), auth.client_options(keys))
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(url)
        sock.send_multipart([b"1", b"", STATS])
        if not sock.poll(int(timeout * 1000)):
            return None
        return msgpack.unpackb(sock.recv_multipart()[-1])
    finally:
        sock.close(0)


# -- the setups --------------------------------------------------------------------------

def _routed(cluster: Cluster, names: list[str]) -> bool:
    workers = (cluster.broker_view() or {}).get("workers", [])
    routing = {w["name"] for w in workers if w.get("routing")}
    return set(names) <= routing


class TwistedEcho(Echo):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.name = "twisted echo"

    def start(self) -> TwistedEcho:
        self.cluster.spawn("broker")
        self.cluster.wait_up(["broker"])
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "bbd.floorbench", "--echo-node",
             self.cluster.layout.url(self.cluster.layout.backend),
             str(self.cluster.layout.keys)])
        wait_for(lambda: _routed(self.cluster, ["twisted-echo"]), 30,
                 "the Twisted echo node to be routed to")
        return self


class FloorNodes(Setup):
    """``nodes`` floor nodes behind the broker; their peer ports are the replication ports
    a board of that size would use."""

    def __init__(self, name: str, root: Path, nodes: int, fsync: bool,
                 early: bool = False, prealloc: int = 0) -> None:
        super().__init__(name, root, nodes, 0)
        self.nodes, self.fsync, self.early, self.prealloc = nodes, fsync, early, prealloc
        root.mkdir(parents=True, exist_ok=True)
        self.root = root

    def names(self) -> list[str]:
        return [f"floor{i}" for i in range(1, self.nodes + 1)]

    def peer_url(self, i: int) -> str:
        return self.cluster.layout.url(self.cluster.layout.server_ports(i)[1])

    def start(self) -> FloorNodes:
        layout = self.cluster.layout
        self.cluster.spawn("broker")
        self.cluster.wait_up(["broker"])
        for i, name in enumerate(self.names(), 1):
            argv = [sys.executable, "-m", "bbd.floorbench", "--node", name,
                    "--broker", layout.url(layout.backend), "--keys", str(layout.keys),
                    "--bind", self.peer_url(i), "--journal", str(self.root / f"{name}.log")]
            for j in range(1, self.nodes + 1):
                if j != i:
                    argv += ["--peer", self.peer_url(j)]
            if not self.fsync:
                argv.append("--no-fsync")
            if self.early:
                argv.append("--early")
            if self.prealloc:
                argv += ["--prealloc", str(self.prealloc)]
            self.cluster.procs[name] = subprocess.Popen(argv)
        wait_for(lambda: _routed(self.cluster, self.names()), 30,
                 f"the nodes of {self.name} to be routed to")
        return self

    def pids(self) -> list[int]:
        return [self.cluster.procs[n].pid for n in self.names()]

    def stats(self) -> list[dict | None]:
        return [ask_stats(self.peer_url(i), self.cluster.keys)
                for i in range(1, self.nodes + 1)]


def broker_pid(setup: Setup) -> int:
    return setup.cluster.procs["broker"].pid


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def loadgen_startup(clients: int, procs: int) -> float:
    """CPU seconds the load generator's processes spend starting (the interpreter, the
    imports) with no request to send: taken off each run's figure, so that what is left
    is its cost per request."""
    procs = max(1, min(procs, clients))
    share = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    before = children_cpu()
    children = [subprocess.Popen(  # as ``load`` starts them, for no time: nothing is sent
        [sys.executable, "-m", "bbd.scalebench", "--load-worker", "tcp://127.0.0.1:9",
         str(n), "0", str(time.time()), "startup"], stdout=subprocess.DEVNULL)
        for n in share]
    for child in children:
        child.wait(60)
    return children_cpu() - before


def measure_all(setup: Setup, clients: int, seconds: float, procs: int,
                startup: float = 0.0) -> dict[str, float]:
    """scalebench's ``measure``, plus the CPU of the broker and of the load generator (the
    processes ``load`` waited for: the only children reaped meanwhile; less ``startup``)
    and, for floor nodes, their fsyncs, all per operation."""
    broker0 = cpu_seconds(broker_pid(setup))
    kids0 = children_cpu()
    before = setup.stats() if isinstance(setup, FloorNodes) else None
    nodes0 = [cpu_seconds(p) for p in setup.pids()]
    result = measure(setup, clients, seconds, procs)
    done = result["rate"] * seconds or nan
    nodes = sum(cpu_seconds(p) - c for p, c in zip(setup.pids(), nodes0, strict=True))
    broker = cpu_seconds(broker_pid(setup)) - broker0
    loadgen = children_cpu() - kids0 - startup
    result["cpu_ms_all"] = (nodes + broker) / done * 1e3
    result["cpu_ms_loadgen"] = loadgen / done * 1e3
    result["fsyncs_per_op"] = nan
    if before is not None:
        after = setup.stats()
        if all(before) and all(after):
            fsyncs = [a["fsyncs"] - b["fsyncs"] for a, b in zip(after, before, strict=True)]
            result["fsyncs_per_op"] = statistics.fmean(fsyncs) / done
    return result


# -- reporting ---------------------------------------------------------------------------

def table(runs: dict[tuple[str, int], list[dict[str, float]]], names: list[str],
          clients: list[int]) -> str:
    """Medians over the rounds; a ratio is taken to the echo of the same round first."""
    lines = ["| setup | clients | writes/s (median; range) | vs echo | p50 | p99 | p99 vs echo "
             "| CPU ms/op/node | CPU ms/op, nodes + broker | + load generator | 2-core ceiling "
             "| fsyncs/op/node | failed |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in clients:
        echo = runs[("echo", n)]
        for name in names:
            rs = runs[(name, n)]

            def med(field: str, rs: list[dict[str, float]] = rs) -> float:
                return statistics.median(r[field] for r in rs)

            ratio = statistics.median(r["rate"] / e["rate"] for r, e in zip(rs, echo, strict=True))
            p99_ratio = statistics.median(r["p99_ms"] / e["p99_ms"]
                                          for r, e in zip(rs, echo, strict=True))
            total = med("cpu_ms_all") + med("cpu_ms_loadgen")
            fsyncs = med("fsyncs_per_op")
            fsync_text = "-" if fsyncs != fsyncs else f"{fsyncs:.2f}"
            lo, hi = min(r["rate"] for r in rs), max(r["rate"] for r in rs)
            lines.append(
                f"| {name} | {n} | {med('rate'):,.0f} ({lo:,.0f}-{hi:,.0f}) | {ratio:.2f}x "
                f"| {med('p50_ms'):.2f} ms | {med('p99_ms'):.2f} ms | {p99_ratio:.1f}x "
                f"| {med('cpu_ms_per_op'):.3f} | {med('cpu_ms_all'):.3f} "
                f"| {total:.3f} | {2000 / total:,.0f}/s "
                f"| {fsync_text} | {sum(r['failed'] for r in rs):.0f} |")
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------

def chosen(setups: list[Setup], only: list[str]) -> list[Setup]:
    """The setups whose name holds one of ``only`` (all if none), the echo always: every
    ratio is to the echo of the same round."""
    return [s for s in setups if not only or s.name == "echo"
            or any(text in s.name for text in only)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bbd.floorbench", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--procs", type=int, default=4, help="load generator processes")
    p.add_argument("--no-single", action="store_true", help="leave out the 1-node floor")
    p.add_argument("--board", action="store_true",
                   help="and the board itself (3 servers, empty), in the same rounds")
    p.add_argument("--only", nargs="+", default=[], metavar="TEXT",
                   help="only the setups whose name holds one of these (the echo always)")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bbd-floorbench-"))  # as scalebench: same disk
    setups: list[Setup] = []
    try:
        planned: list[Setup] = [
            Echo(root / "echo"), TwistedEcho(root / "twisted-echo"),
            FloorNodes("floor, 3 nodes, fsync", root / "f3", 3, True),
            FloorNodes("floor, 3 nodes, no fsync", root / "f3-nofsync", 3, False),
            FloorNodes("floor, 3 nodes, fsync, replicate first", root / "f3-early", 3, True,
                       early=True),
            FloorNodes("floor, 3 nodes, fsync, replicate first, preallocated", root / "f3-lean",
                       3, True, early=True, prealloc=PREALLOC)]
        if not args.no_single:
            planned.append(FloorNodes("floor, 1 node, fsync", root / "f1", 1, True))
        if args.board:
            planned.append(Setup("board, 3 servers", root / "board", 3, 0))
        planned = chosen(planned, args.only)
        for setup in planned:
            setups.append(setup)  # stopped at the end even if its start fails
            setup.start()
        for setup in setups:  # connections made, CURVE handshakes done, code paths warm
            load(setup.frontend, 2, 1.0, 1)
        startup = {n: loadgen_startup(n, args.procs) for n in args.clients}
        print("load generator start-up, CPU s per run (taken off): " + ", ".join(
            f"{n} clients {s:.2f}" for n, s in startup.items()), flush=True)
        runs: dict[tuple[str, int], list[dict[str, float]]] = {}
        for r in range(args.rounds):
            for n in args.clients:
                for setup in setups:
                    res = measure_all(setup, n, args.seconds, args.procs, startup[n])
                    runs.setdefault((setup.name, n), []).append(res)
                    print(f"round {r + 1}: {setup.name:<25} clients={n:<3} {res['rate']:8.0f}/s"
                          f"  p50 {res['p50_ms']:6.2f} ms  p99 {res['p99_ms']:7.2f} ms"
                          f"  CPU {res['cpu_ms_all']:.3f} ms/op (+ load "
                          f"{res['cpu_ms_loadgen']:.3f})  failed {res['failed']}", flush=True)
        for setup in setups:
            if isinstance(setup, FloorNodes):
                print(f"{setup.name}: counters per node {setup.stats()}", flush=True)
        print(f"load average: {os.getloadavg()[0]:.2f} (1 min)", flush=True)
        print(table(runs, [s.name for s in setups], args.clients), flush=True)
    finally:
        for setup in setups:
            setup.stop()
        shutil.rmtree(root, ignore_errors=True)


def _node_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m bbd.floorbench --node")
    p.add_argument("--node", required=True)
    p.add_argument("--broker", required=True)
    p.add_argument("--keys", required=True)
    p.add_argument("--bind", required=True)
    p.add_argument("--peer", action="append", default=[])
    p.add_argument("--journal", required=True)
    p.add_argument("--no-fsync", action="store_true")
    p.add_argument("--early", action="store_true", help="replicate before the local fsync")
    p.add_argument("--prealloc", type=int, default=0, help="journal preallocated, bytes")
    a = p.parse_args(argv)
    run_floor_node(a.node, a.broker, a.keys, a.bind, a.peer, a.journal, not a.no_fsync,
                   a.early, a.prealloc)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--echo-node":
        run_echo_node(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "--node":
        _node_main(sys.argv[1:])
    else:
        main()
