"""Broker (ROUTER/DEALER) and pub/sub proxy (XSUB/XPUB).

Both only move frames, so they run pyzmq's built-in steerable proxy in a thread: it
forwards in C at several times the rate a Python loop could, and the reactor stays free to
log and to stop it cleanly (TERMINATE on the control socket).
"""

from __future__ import annotations

import threading

import zmq
from twisted.application import service
from twisted.internet import defer, threads
from twisted.logger import Logger

from bbd import auth

log = Logger()


class RelayService(service.Service):
    def __init__(self, what: str, front: tuple[int, str], back: tuple[int, str],
                 max_bytes: int, keys: auth.Keys | None = None,
                 secure: tuple[bool, bool] = (False, False)) -> None:
        """``secure``: which of (front, back) accepts only the board's keys (CURVE)."""
        self.what = what
        self.keys = keys
        self.secure = secure
        self.guard: auth.Guard | None = None
        self.front_type, self.front_addr = front
        self.back_type, self.back_addr = back
        self.max_bytes = max_bytes
        self.ctx: zmq.Context | None = None
        self.thread: threading.Thread | None = None

    def startService(self) -> None:
        super().startService()
        self.ctx = zmq.Context()
        self.guard = auth.Guard(self.ctx, self.keys,
                                auth.threadsafe_refusal_logger(log, self.what)).start()
        front = self.ctx.socket(self.front_type)
        back = self.ctx.socket(self.back_type)
        for sock, secured in zip((front, back), self.secure, strict=True):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, self.max_bytes)
            if secured:
                auth.secure(sock, auth.server_options(self.keys))
        # Bind here, not in the thread, so a port in use fails the daemon's start loudly.
        front.bind(self.front_addr)
        back.bind(self.back_addr)
        control = f"inproc://{self.what}-control-{id(self)}"
        ctrl_in = self.ctx.socket(zmq.PAIR)
        ctrl_in.bind(control)
        self.ctrl_out = self.ctx.socket(zmq.PAIR)
        self.ctrl_out.connect(control)
        self.thread = threading.Thread(
            target=self._run, args=(front, back, ctrl_in), name=self.what, daemon=True)
        self.thread.start()
        log.info("{what} relaying {front} <-> {back} ({how})", what=self.what,
                 front=self.front_addr, back=self.back_addr,
                 how="authentication off" if self.keys is None else "CURVE on " + " and ".join(
                     a for a, s in zip((self.front_addr, self.back_addr), self.secure,
                                       strict=True) if s) or "no port")

    def _run(self, front: zmq.Socket, back: zmq.Socket, ctrl: zmq.Socket) -> None:
        try:
            zmq.proxy_steerable(front, back, None, ctrl)
        except zmq.ContextTerminated:
            pass
        finally:
            for sock in (front, back, ctrl):
                sock.close(0)

    def stopService(self) -> defer.Deferred | None:
        """Tell the loop to end, then wait for it and end the context in a thread: joining
        and ``term()`` block, and the reactor must not (the stop waits on the Deferred)."""
        super().stopService()
        thread, self.thread = self.thread, None
        if thread is None:
            return None
        self.ctrl_out.send(b"TERMINATE")
        d = threads.deferToThread(self._finish, thread)
        d.addCallback(lambda _: log.info("{what} stopped", what=self.what))
        d.addErrback(lambda f: log.failure("{what} did not stop cleanly", f, what=self.what))
        return d

    def _finish(self, thread: threading.Thread) -> None:
        thread.join(5)
        self.ctrl_out.close(0)
        if self.guard is not None:
            self.guard.stop()  # its ZAP socket must close before the context can end
        if self.ctx is not None:
            self.ctx.term()


def broker(frontend: str, backend: str, max_bytes: int,
           keys: auth.Keys | None = None) -> service.Service:
    """Anyone may ask (ROUTER); only the board's servers may serve (DEALER backend)."""
    return RelayService("broker", (zmq.ROUTER, frontend), (zmq.DEALER, backend), max_bytes,
                        keys, secure=(False, True))


def proxy(xsub: str, xpub: str, max_bytes: int,
          keys: auth.Keys | None = None) -> service.Service:
    """Only the board's processes may publish (XSUB); anyone may subscribe (XPUB)."""
    return RelayService("proxy", (zmq.XSUB, xsub), (zmq.XPUB, xpub), max_bytes, keys,
                        secure=(True, False))
