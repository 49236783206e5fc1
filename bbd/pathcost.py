"""What the board's own logic costs per write, without sockets: a server's two roles in one
process, on a ``task.Clock``, fed encoded messages as its sockets would deliver them.

    python -m bbd.pathcost [--writes 3000] [--batches 1 3 16] [--no-fsync]

- ``origin``: client ``publish`` requests, ``batch`` of them a reactor turn, through the
  front end, the checks, the journal (a real file, fsync'd once a turn), the outbox (the
  two peers' acks given at once, in process) and the reply (encoded, handed to a fake
  socket). The request's log line is formatted as the daemon's observer formats it.
- ``replica``: ``replicate`` messages of ``batch`` rows, through the replication port's
  responder, the entitlement check, the journal and the ack.

CPU time per write from ``time.process_time``, best of three runs. Set beside
``bbd.scalebench``'s CPU per write per server (from /proc, the daemons under load), the
difference is what the sockets, the reactor's turns and the processes' wake-ups cost.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.logger import globalLogPublisher

from bbd import config, protocol
from bbd.logs import text_observer
from bbd.state import Op

ORIGIN, PEER = "servidor-1", "servidor-2"
TEXT = "x" * 60


class _Socket:
    """Takes replies as a socket would (already encoded); counts them."""

    def __init__(self) -> None:
        self.sent = 0

    def reply(self, envelope: list[bytes], body: bytes) -> None:
        self.sent += 1

    def request_id(self, envelope: list[bytes]) -> str | None:
        return None


class _Publisher:
    def publish(self, topic: str, payload: bytes) -> bool:
        return True


class _Sink:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


@contextmanager
def _logging() -> Iterator[None]:
    """The daemon's log observer, writing nowhere: each line is formatted as in a run."""
    observer = text_observer(_Sink())  # type: ignore[arg-type]
    globalLogPublisher.addObserver(observer)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(observer)


def _server(directory: Path) -> tuple[Any, task.Clock]:
    from bbd.services.server import BoardServer, ServerConfig

    cfg = ServerConfig(name=ORIGIN, data_dir=directory, broker="", publish="", subscribe="",
                       reference="", bind="127.0.0.1", host="127.0.0.1", sync_port=1,
                       replication_port=2, max_bytes=1 << 20,
                       timing=config.settings().timing)
    clock = task.Clock()
    server = BoardServer(cfg, clock=clock)
    server.clients.socket = _Socket()
    server.replication_router = _Socket()
    server.publisher = _Publisher()
    server.journal.open()
    server.catchup.finished()
    server._resumed_from_pause = lambda: False
    server.replication._known_origins = lambda: {ORIGIN, PEER, "servidor-3"}
    return server, clock


def _request(service: str, **data: Any) -> bytes:
    return protocol.encode({"service": service, "data": {
        **data, "clock": 1, "timestamp": time.time()}})


def origin(directory: Path, writes: int, batch: int) -> float:
    """CPU seconds for ``writes`` publishes, ``batch`` a turn, on the origin."""
    from bbd.services.replication import Peer

    server, clock = _server(directory)
    for name, rank in (("servidor-2", 2), ("servidor-3", 3)):
        server.replication.peers[name] = Peer(name, rank, "tcp://x:1", "tcp://x:2")
    acks: list[defer.Deferred] = []

    def ask(client: Any, service: str, data: dict[str, Any]) -> defer.Deferred:
        protocol.encode({"service": service, "data": data})  # as the request is sent
        acks.append(defer.Deferred())
        return acks[-1]

    server.ask = ask

    def turn(bodies: list[bytes]) -> None:
        for body in bodies:
            server.clients.on_request([b"c"], body)
        clock.advance(0)  # the journal batch, then its replicate round
        while acks:
            acks.pop().callback({"status": "OK", "competitors": []})

    turn([_request("login", user="ana")])
    turn([_request("channel", channel="geral")])
    bodies = [_request("publish", user="ana", channel="geral", message=TEXT, id=f"r{i}")
              for i in range(writes)]
    began = time.process_time()
    for i in range(0, writes, batch):
        turn(bodies[i:i + batch])
    took = time.process_time() - began
    if server.clients.socket.sent != writes + 2:
        raise AssertionError(f"{server.clients.socket.sent} replies for {writes + 2} requests")
    server.journal.close()
    return took


def replica(directory: Path, writes: int, batch: int) -> float:
    """CPU seconds for ``writes`` operations of a peer, ``batch`` a replicate."""
    server, clock = _server(directory)
    seq = 0

    def op(kind: str, fields: dict[str, str]) -> Op:
        nonlocal seq
        seq += 1
        return Op(PEER, seq, seq, kind, time.time(), fields, f"r{seq}")

    def replicate(ops: list[Op]) -> bytes:
        return _request("replicate", rows=ops)

    server._on_replication([b"p"], replicate([op("login", {"user": "ana"}),
                                              op("channel", {"channel": "geral"})]))
    clock.advance(0)
    bodies = [replicate([op("publish", {"user": "ana", "channel": "geral", "message": TEXT})
                         for _ in range(batch)]) for _ in range(writes // batch)]
    began = time.process_time()
    for body in bodies:
        server._on_replication([b"p"], body)
        clock.advance(0)
    took = time.process_time() - began
    if server.replication_router.sent != len(bodies) + 1:
        raise AssertionError(f"{server.replication_router.sent} acks for {len(bodies) + 1}")
    if server.board.vector.get(PEER) != seq:
        raise AssertionError(f"held {server.board.vector.get(PEER)} of {seq} operations")
    server.journal.close()
    return took


def per_write(role: Callable[[Path, int, int], float], writes: int, batch: int,
              runs: int = 3) -> float:
    """Microseconds of CPU per write, best of ``runs``."""
    best = float("inf")
    for _ in range(runs):
        directory = Path(tempfile.mkdtemp(prefix="bbd-pathcost-"))
        try:
            best = min(best, role(directory, writes, batch))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return best / (writes // batch * batch) * 1e6


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bbd.pathcost",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--writes", type=int, default=3000)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 3, 16])
    p.add_argument("--no-fsync", action="store_true",
                   help="skip the journal's fsync (its CPU is the kernel's, counted here)")
    args = p.parse_args(argv)
    if args.no_fsync:
        os.fsync = lambda fd: None  # this process only: a measurement switch
    print("| writes a turn / a replicate | origin, µs CPU per write | replica, µs CPU per "
          "write | one server's share (1/3 origin + 2/3 replica) |")
    print("|---|---|---|---|")
    with _logging():
        for batch in args.batches:
            o = per_write(origin, args.writes, batch)
            r = per_write(replica, args.writes, batch)
            print(f"| {batch} | {o:.0f} | {r:.0f} | {(o + 2 * r) / 3:.0f} |", flush=True)


if __name__ == "__main__":
    main()
