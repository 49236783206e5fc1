"""The reference server: ranks, heartbeats and the list of live servers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import reactor
from twisted.logger import Logger

from bbd import auth, protocol
from bbd.lamport import LamportClock
from bbd.options import SecureDaemonOptions, tcp_any
from bbd.protocol import ProtocolError, Request
from bbd.registry import Refused, Registry
from bbd.services.responder import Responder
from bbd.services.timers import every
from bbd.store import write_json_atomic

log = Logger()
REGISTRY_FILE = "referencia.json"


class ReferenceService(service.Service):
    def __init__(self, listen: str, data_dir: Path, expiry: float, max_bytes: int,
                 clock: Any = reactor, keys: auth.Keys | None = None) -> None:
        self.listen = listen
        self.keys = keys
        self.guard: auth.Guard | None = None
        self.data_dir = data_dir
        self.max_bytes = max_bytes
        self.clock = clock
        self.lamport = LamportClock()
        self.responder = Responder(self.lamport, clock.seconds, log)
        path = data_dir / REGISTRY_FILE
        entries = json.loads(path.read_text()) if path.exists() else []
        self.registry = Registry(expiry, entries, vouch=self._vouch)
        self.conn = None
        self.factory = None

    def startService(self) -> None:
        from bbd import sockets

        super().startService()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.factory = sockets.make_factory()
        self.guard = auth.Guard(self.factory.context, self.keys,
                                auth.threadsafe_refusal_logger(log, "reference")).start()
        self.conn = sockets.RouterServer(
            self.factory, [sockets.bind(self.listen)], self._on_request, self.max_bytes,
            auth.server_options(self.keys))
        log.info("reference listening on {listen} ({how}), {n} servers known",
                 listen=self.listen, n=len(self.registry.servers),
                 how="authentication off" if self.keys is None else "CURVE")

    def stopService(self) -> None:
        super().stopService()
        if self.guard is not None:
            self.guard.stop()
        if self.factory is not None:
            self.factory.shutdown()
            self.factory = None

    def _vouch(self, name: str, token: str) -> bool:
        """With keys, a server's token is derived from the board's secret and its name: we
        can check it ourselves, whatever claim the name carried before."""
        import hmac

        return self.keys is not None and hmac.compare_digest(
            token.encode("utf-8"), auth.name_token(self.keys, name).encode("utf-8"))

    def _on_request(self, envelope: list[bytes], body: bytes) -> None:
        handlers = {"rank": self._rank, "list": self._list, "heartbeat": self._heartbeat,
                    "leave": self._leave}
        self.responder.handle(lambda out: self.conn.reply(envelope, out), body, handlers)

    def _rank(self, req: Request) -> dict[str, Any]:
        name = protocol.require_name(req.data, "user", "rank")
        endpoints = {k: req.data[k] for k in ("sync", "replication")
                     if isinstance(req.data.get(k), str)}
        token = req.data.get("token") if isinstance(req.data.get("token"), str) else None
        try:
            rank, changed = self.registry.rank(name, endpoints, self.clock.seconds(), token)
        except Refused as e:
            log.warn("refused rank for {name} with endpoints {endpoints}: {why}", name=name,
                     endpoints=endpoints, why=str(e))
            raise ProtocolError(str(e), "rank") from None
        if changed:
            write_json_atomic(self.data_dir / REGISTRY_FILE, self.registry.entries())
        log.info("rank {name} -> {rank} clock={clock}", name=name, rank=rank,
                 clock=self.lamport.value)
        return {"rank": rank}

    def _list(self, req: Request) -> dict[str, Any]:
        # ``registered`` (extension): every server ever ranked, live or not.
        return {"list": self.registry.live(self.clock.seconds()),
                "registered": self.registry.registered()}

    def _heartbeat(self, req: Request) -> dict[str, Any]:
        name = req.data.get("user")
        if not isinstance(name, str):
            raise ProtocolError("missing field 'user'", "heartbeat")
        now = self.clock.seconds()
        server = self.registry.servers.get(name)
        was_live = server is not None and self.registry.is_live(server, now)
        token = req.data.get("token") if isinstance(req.data.get("token"), str) else None
        try:
            known = self.registry.heartbeat(name, now, token)
        except Refused as e:
            log.warn("refused heartbeat: {why}", why=str(e))
            raise ProtocolError(str(e), "heartbeat") from None
        if not known:
            return {"status": "unknown"}
        if not was_live:
            log.info("server {name} (rank {rank}) is live", name=name, rank=server.rank)
        return {"status": "OK"}

    def _leave(self, req: Request) -> dict[str, Any]:
        """(Extension) a server stopping on purpose: off the live list now, not after the
        heartbeat expiry, so its peers stop sending to it at their next list."""
        name = req.data.get("user")
        if not isinstance(name, str):
            raise ProtocolError("missing field 'user'", "leave")
        token = req.data.get("token") if isinstance(req.data.get("token"), str) else None
        try:
            was_live = self.registry.leave(name, token)
        except Refused as e:
            log.warn("refused leave: {why}", why=str(e))
            raise ProtocolError(str(e), "leave") from None
        if was_live:
            server = self.registry.servers[name]
            log.info("server {name} (rank {rank}) is stopping: off the list", name=name,
                     rank=server.rank)
        return {"status": "OK"}

    def expire(self) -> None:
        for s in self.registry.expire(self.clock.seconds()):
            log.info("server {name} (rank {rank}) missed its heartbeats: gone",
                     name=s.name, rank=s.rank)


def make(listen: str, data_dir: Path, expiry: float, check_every: float,
         max_bytes: int, keys: auth.Keys | None = None) -> service.MultiService:
    top = service.MultiService()
    ref = ReferenceService(listen, data_dir, expiry, max_bytes, keys=keys)
    ref.setServiceParent(top)
    every(check_every, ref.expire, "heartbeat expiry").setServiceParent(top)
    return top


class Options(SecureDaemonOptions):
    optParameters = SecureDaemonOptions.optParameters + [
        ["listen", None, tcp_any("reference"), "endpoint servers reach the reference at"],
        ["data", None, "dados-referencia", "directory for the persisted rank registry"],
        ["expiry", None, None, "seconds without heartbeats before a server leaves the list",
         float],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if self["expiry"] is None:
            self["expiry"] = self["timing"].heartbeat_expiry


def makeService(options: Options) -> service.MultiService:
    expiry = options["expiry"]
    return make(options["listen"], Path(options["data"]), expiry, min(0.5, expiry / 4),
                options["max-bytes"], options["auth"])
