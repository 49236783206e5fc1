"""The broker that routes by readiness: clients' ROUTER in front, servers' ROUTER behind.

Messages move in one dedicated thread: a plain pyzmq Poller loop around the pure
``bbd.loadbalance.Balancer`` (no Deferred, no reactor call per message). The reactor only
binds the sockets (so a port in use fails the start loudly), logs what the loop reports,
and stops it: a message on an inproc control socket makes the loop close its own sockets
and return, after which the context terminates at once.

A third socket, the status port, answers ``status`` in the standard envelope with the
broker's view of every server (ready, routing, requests in flight), from the loop itself.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import msgpack
import zmq
from twisted.application import service
from twisted.logger import Logger

from bbd import auth
from bbd.loadbalance import Balancer, Settings

log = Logger()

TICK = 0.1  # seconds between expiry / re-send / heartbeat checks
BACKEND_HWM = 1000  # per server: a stopped server's queue stays bounded
BATCH = 256  # messages taken from one socket before looking at the others

# Plain ints: pyzmq's multipart helpers combine enum flags per frame, which costs more than
# the rest of the loop together.
_SEND_MORE = int(zmq.SNDMORE) | int(zmq.NOBLOCK)
_SEND_LAST = int(zmq.NOBLOCK)
_RCVMORE = int(zmq.RCVMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def send_frames(sock: zmq.Socket, frames: list[bytes]) -> None:
    """A multipart send that never blocks; raises ZMQError (EAGAIN, EHOSTUNREACH) on the
    first frame, before anything is queued."""
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        sock.send(frame, _SEND_MORE if i < last else _SEND_LAST)


def recv_frames(sock: zmq.Socket) -> list[bytes]:
    """One whole message from a socket the poller says is readable."""
    frames = [sock.recv()]
    while sock.get(_RCVMORE):
        frames.append(sock.recv())
    return frames


def readable(sock: zmq.Socket) -> bool:
    return bool(sock.get(_EVENTS) & _POLLIN)


class BalancerService(service.Service):
    def __init__(self, frontend: str, backend: str, status: str | None, max_bytes: int,
                 settings: Settings | None = None, keys: auth.Keys | None = None) -> None:
        self.addresses = {"frontend": frontend, "backend": backend, "status": status}
        self.max_bytes = max_bytes
        self.keys = keys  # the backend (and status port) take only the board's keys
        self.settings = settings or Settings()
        self.ctx: zmq.Context | None = None
        self.thread: threading.Thread | None = None
        self.control: zmq.Socket | None = None

    def startService(self) -> None:
        from twisted.internet import reactor

        super().startService()
        self.reactor = reactor
        self.ctx = zmq.Context()
        # The ZAP guard first: a CURVE port bound without it would admit any key.
        self.guard = auth.Guard(self.ctx, self.keys,
                                auth.threadsafe_refusal_logger(log, "broker")).start()
        internal = auth.server_options(self.keys)
        front = self._socket(zmq.ROUTER, self.addresses["frontend"])
        back = self._socket(zmq.ROUTER, self.addresses["backend"], internal)
        back.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a gone server raises, we re-route
        # The status port stays open, like 5555: it tells only who is routed, and how busy.
        status = self._socket(zmq.ROUTER, self.addresses["status"]) \
            if self.addresses["status"] else None
        address = f"inproc://balancer-control-{id(self)}"
        ctrl_in = self.ctx.socket(zmq.PAIR)
        ctrl_in.bind(address)
        self.control = self.ctx.socket(zmq.PAIR)
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.connect(address)
        self.thread = threading.Thread(target=self._run, args=(front, back, status, ctrl_in),
                                       name="balancer", daemon=True)
        self.thread.start()
        log.info("broker routing by readiness: clients {frontend}, servers {backend}, "
                 "status {status}", **self.addresses)

    def _socket(self, kind: int, address: str,
                security: dict[int, Any] | None = None) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_bytes)
        sock.setsockopt(zmq.SNDHWM, BACKEND_HWM)
        auth.secure(sock, security or {})
        sock.bind(address)
        return sock

    def stopService(self) -> None:
        super().stopService()
        if self.thread is None:
            return
        # The guard first: the loop terminates the context as it ends, and a context
        # terminated under the authenticator's thread leaves that thread (and the stop
        # that joins it) hanging.
        self.guard.stop()
        self.control.send(b"STOP")
        self.control.close(0)
        # The loop answers within one poll, closes its sockets and ends the context itself
        # (a context left to the garbage collector would block it in term()); a loop that
        # does not stop in time is left behind, a daemon thread.
        self.thread.join(1.0)
        self.thread = None
        log.info("broker stopped")

    # -- the loop (its own thread) ---------------------------------------------------

    def _run(self, front: zmq.Socket, back: zmq.Socket, status: zmq.Socket | None,
             ctrl: zmq.Socket) -> None:
        core = Balancer(self.settings)
        self.core = core
        poller = zmq.Poller()
        for sock in (front, back, status, ctrl):
            if sock is not None:
                poller.register(sock, zmq.POLLIN)
        clock = time.monotonic
        next_tick = clock()
        try:
            while True:
                wait = max(1, int((next_tick - clock()) * 1000) + 1)
                ready = [sock for sock, _ in poller.poll(wait)]
                if ctrl in ready:
                    break
                now = clock()
                # A readable socket holds at least one message; take more while it says
                # it has them (EVENTS), never paying for a failed non-blocking recv.
                if back in ready:
                    for _ in range(BATCH):
                        frames = recv_frames(back)
                        core.worker_message(frames[0], frames[1:], now)
                        if not readable(back):
                            break
                if front in ready:
                    for _ in range(BATCH):
                        frames = recv_frames(front)
                        if len(frames) >= 2:
                            core.client_request(frames[:-1], frames[-1], now)
                        if not readable(front):
                            break
                if status is not None and status in ready:
                    self._answer_status(status, core, now)
                if now >= next_tick:
                    core.tick(now)
                    next_tick = now + TICK
                self._flush(core, front, back, now)
        except zmq.ContextTerminated:
            pass
        except Exception:
            self.reactor.callFromThread(log.failure, "broker loop crashed")
        finally:
            for sock in (front, back, status, ctrl):
                if sock is not None:
                    sock.close(0)
            self.ctx.term()  # the guard and the control socket were closed at stop

    def _flush(self, core: Balancer, front: zmq.Socket, back: zmq.Socket, now: float) -> None:
        while core.to_back:
            out, core.to_back = core.to_back, []
            for frames in out:
                try:
                    send_frames(back, frames)
                except zmq.ZMQError:  # EHOSTUNREACH (gone) or EAGAIN (queue full)
                    core.undeliverable(frames, now)
        if core.to_front:
            for frames in core.to_front:
                try:
                    send_frames(front, frames)
                except zmq.ZMQError:
                    pass  # the client is gone or not reading: it will retry
            core.to_front = []
        if core.events:
            events, core.events = core.events, []
            self.reactor.callFromThread(self._log, events)

    def _answer_status(self, sock: zmq.Socket, core: Balancer, now: float) -> None:
        for _ in range(16):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            data = core.status(now)
            data.update(timestamp=time.time(), clock=0, status="OK")
            reply = msgpack.packb({"service": "status", "data": data}, use_bin_type=True)
            try:
                sock.send_multipart([*frames[:-1], reply], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass

    @staticmethod
    def _log(events: list[tuple[str, str, dict[str, Any]]]) -> None:
        for level, fmt, fields in events:
            getattr(log, level)(fmt, **fields)
