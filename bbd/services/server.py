"""A replicated board server: wires the pure board to the broker, the proxy, the reference
and its peers.

Life of a write (``login``, ``channel``, ``publish``, ``message``) at its origin:
validate -> propose an operation (Lamport stamp) -> apply in memory -> journal (group
commit, fsync) -> send to every live peer and wait for their acks (a peer journals before
it acks, and returns any competitor it holds) -> decide the outcome by the board's rule ->
reply -> publish, if it is a post or private message that took effect.

A server takes client requests only once it has caught up with its peers: at start, and
again after it notices it was paused or cut off.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import defer, reactor
from twisted.logger import Logger
from twisted.python import usage

from bbd import auth, config, protocol
from bbd.commit import GroupCommit
from bbd.lamport import LamportClock
from bbd.options import SecureDaemonOptions, tcp_local
from bbd.physclock import PhysicalClock
from bbd.protocol import ProtocolError, Request
from bbd.services.replication import Peer, Replication
from bbd.services.responder import Responder, call
from bbd.state import Board, Op, ops_from_files
from bbd.store import DataFiles, Journal

log = Logger()


@dataclass
class ServerConfig:
    name: str
    data_dir: Path
    broker: str
    publish: str
    subscribe: str
    reference: str
    bind: str
    host: str
    sync_port: int
    replication_port: int
    max_bytes: int
    heartbeat_interval: float
    peer_timeout: float
    anti_entropy_interval: float
    snapshot_interval: float
    reload_interval: float
    clock_skew: float = 0.0
    clock_drift: float = 0.0
    berkeley_interval: float = 10.0
    berkeley_every: int = 10
    election_answer_timeout: float = 0.5
    election_announce_timeout: float = 1.5
    keys: auth.Keys | None = None  # None: authentication off (--no-auth)

    def endpoint(self, port: int) -> str:
        return f"tcp://{self.host}:{port}"


@dataclass
class _Settling:
    """Waiters for an own operation whose replication has not finished."""

    waiters: list[defer.Deferred] = field(default_factory=list)

    def wait(self) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.waiters.append(d)
        return d


class BoardServer(Replication, service.Service):
    def __init__(self, cfg: ServerConfig, clock: Any = reactor) -> None:
        self.cfg = cfg
        self.clock = clock
        self.lamport = LamportClock()
        self.physical = PhysicalClock(skew=cfg.clock_skew, drift=cfg.clock_drift)
        self.responder = Responder(self.lamport, self.physical.now, log)
        self.board = Board(cfg.name)
        self.journal = Journal(cfg.data_dir)
        self.files = DataFiles(cfg.data_dir)
        self.committer = GroupCommit(self.journal.append)
        self.rank: int | None = None
        self.peers: dict[str, Peer] = {}
        self.ready = False
        self.catching_up = False
        self.queued: list[tuple[list[bytes], bytes]] = []
        self.settling: dict[str, _Settling] = {}
        self._outbox: list[tuple[Op, defer.Deferred]] = []
        self._outbox_call: Any = None
        self.snapshot_at = -1  # board.applied when the last snapshot was taken
        self.files_at = -1  # ... and when the last one reached the disk
        self.handled = 0
        self._reference_lost = False
        self._cut_off = False
        self.factory = None
        self.guard: auth.Guard | None = None
        self.token = ""  # proves to the reference that our name is ours
        self.registered: dict[str, dict] = {}  # every server the reference ever ranked
        self.frontend = None
        self.coordination = None  # election + Berkeley, attached by the plugin
        self.client_handlers = {
            "login": self._login, "users": self._users, "channel": self._channel,
            "channels": self._channels, "publish": self._publish, "message": self._message,
            "history": self._history,
        }
        self.replication_handlers = {"replicate": self._replicate_in, "pull": self._pull_in}

    # -- start and stop --------------------------------------------------------------

    def startService(self) -> None:
        from bbd import sockets

        super().startService()
        self.cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.token = auth.server_token(self.cfg.data_dir)
        records, cut = self.journal.load()
        if cut:
            log.warn("journal: cut {cut} bytes of torn tail (never acknowledged)", cut=cut)
        for record in records:
            op = Op.from_dict(record)
            self.board.apply(op)
            self.lamport.observe(op.clock)
        self.journal.open()
        log.info("{name}: restored {n} operations from {dir}", name=self.cfg.name,
                 n=len(records), dir=str(self.cfg.data_dir))
        self.factory = sockets.make_factory()
        mb = self.cfg.max_bytes
        # The ZAP guard first: a CURVE port bound without it would admit any key.
        self.guard = auth.Guard(self.factory.context, self.cfg.keys,
                                auth.threadsafe_refusal_logger(log, self.cfg.name)).start()
        inbound, outbound = auth.server_options(self.cfg.keys), auth.client_options(self.cfg.keys)
        self.replication = sockets.RouterServer(
            self.factory, [sockets.bind(f"tcp://{self.cfg.bind}:{self.cfg.replication_port}")],
            self._on_replication, mb, inbound)
        self.sync = sockets.RouterServer(
            self.factory, [sockets.bind(f"tcp://{self.cfg.bind}:{self.cfg.sync_port}")],
            self._on_sync, mb, inbound)
        self.publisher = sockets.Publisher(
            self.factory, [sockets.connect(self.cfg.publish)], outbound)
        self.reference = sockets.DealerClient(
            self.factory, self.cfg.reference, self.clock, mb, outbound)
        self._last_tick = time.monotonic()
        self._starting = self._start_up()

    @defer.inlineCallbacks
    def _start_up(self) -> Any:
        while self.running and self.rank is None:
            yield self.heartbeat()
            if self.rank is None:
                yield _sleep(self.clock, self.cfg.heartbeat_interval)
        if not self.running:
            return
        yield self.catch_up("start")
        from bbd import sockets

        self.frontend = sockets.RouterServer(
            self.factory, [sockets.connect(self.cfg.broker)], self._on_client, self.cfg.max_bytes)
        log.info("{name} (rank {rank}) serving clients via {broker}", name=self.cfg.name,
                 rank=self.rank, broker=self.cfg.broker)
        if self.coordination is not None:
            self.coordination.started()

    def stopService(self) -> defer.Deferred:
        super().stopService()
        return self._stop()

    @defer.inlineCallbacks
    def _stop(self) -> Any:
        for peer in self.peers.values():
            self._close_peer(peer)
        # Let in-flight journal batches finish, then write the files once more.
        while not self.committer.idle():
            yield _sleep(self.clock, 0.01)
        self.write_files()
        self.journal.close()
        if self.guard is not None:
            self.guard.stop()
        if self.factory is not None:
            self.factory.shutdown()
            self.factory = None
        log.info("{name} stopped", name=self.cfg.name)

    # -- the reference: registration, heartbeats, peers ------------------------------

    def _ask(self, client: Any, service_: str, data: dict[str, Any]) -> defer.Deferred:
        return call(client, service_, data, lamport=self.lamport, now=self.physical.now,
                    timeout=self.cfg.peer_timeout)

    @defer.inlineCallbacks
    def periodic_heartbeat(self) -> Any:
        """The heartbeat timer, once serving (start-up registers by itself). Coming back
        from a cut-off (the reference unreachable, or it had written us off) means the
        others may have gone on without us: catch up before serving again."""
        if not self.ready or self.catching_up:
            return
        yield self.heartbeat()
        if self._cut_off and self.rank is not None and not self._reference_lost:
            self._cut_off = False
            yield self.catch_up("a cut-off from the reference")

    @defer.inlineCallbacks
    def heartbeat(self) -> Any:
        """Register (rank) or heartbeat, then refresh the peer list."""
        try:
            if self.rank is None:
                reply = yield self._ask(self.reference, "rank", {
                    "user": self.cfg.name, "token": self.token,
                    "sync": self.cfg.endpoint(self.cfg.sync_port),
                    "replication": self.cfg.endpoint(self.cfg.replication_port)})
                self.rank = int(reply["rank"])
                log.info("{name} registered with rank {rank}", name=self.cfg.name,
                         rank=self.rank)
            else:
                reply = yield self._ask(self.reference, "heartbeat",
                                        {"user": self.cfg.name, "token": self.token})
                if reply.get("status") == "unknown":
                    log.warn("reference does not know {name}: registering again",
                             name=self.cfg.name)
                    self.rank = None
                    self._cut_off = True
                    return
            reply = yield self._ask(self.reference, "list", {})
            self._update_peers(reply.get("list") or [], reply.get("registered"))
            if self._reference_lost:
                log.info("reference {ref} reachable again", ref=self.cfg.reference)
                self._reference_lost = False
        except Exception as e:
            if not self._reference_lost:
                log.warn("reference {ref} unreachable ({why}); keeping the last peer list",
                         ref=self.cfg.reference, why=str(e))
            self._reference_lost = self._cut_off = True

    # -- client requests -------------------------------------------------------------

    def _on_client(self, envelope: list[bytes], body: bytes) -> None:
        if self.ready and self._resumed_from_pause():
            self.catch_up("a pause")
        if not self.ready:
            self.queued.append((envelope, body))
            return
        self.handled += 1
        self.responder.handle(lambda out: self.frontend.reply(envelope, out), body,
                              self.client_handlers)
        if self.coordination is not None:
            self.coordination.message_handled(self.handled)

    def _users(self, req: Request) -> dict[str, Any]:
        users = self.board.user_list()
        log.info("users: {n} clock={clock}", n=len(users), clock=self.lamport.value)
        return {"users": users}

    def _channels(self, req: Request) -> dict[str, Any]:
        channels = self.board.channel_list()
        log.info("channels: {n} clock={clock}", n=len(channels), clock=self.lamport.value)
        return {"channels": channels}

    def _history(self, req: Request) -> dict[str, Any]:
        kind, name, limit, before = protocol.history_query(req.data)
        try:
            items = self.board.history(kind, name, limit, before)
        except ValueError as e:
            raise ProtocolError(str(e), "history") from None
        log.info("history {kind} {name}: {n} items clock={clock}", kind=kind, name=name,
                 n=len(items), clock=self.lamport.value)
        return {"messages": items}

    def _login(self, req: Request) -> defer.Deferred:
        user = protocol.require_name(req.data, "user", "login")
        return self._write(req, "login", {"user": user}, user)

    def _channel(self, req: Request) -> defer.Deferred:
        name = protocol.require_name(req.data, "channel", "channel")
        return self._write(req, "channel", {"channel": name}, name)

    def _publish(self, req: Request) -> defer.Deferred:
        fields = {"user": protocol.require_name(req.data, "user", "publish"),
                  "channel": protocol.require_name(req.data, "channel", "publish"),
                  "message": protocol.require_text(req.data, "message", "publish")}
        return self._write(req, "publish", fields, f"{fields['user']} -> #{fields['channel']}")

    def _message(self, req: Request) -> defer.Deferred:
        fields = {"src": protocol.require_name(req.data, "src", "message"),
                  "dst": protocol.require_name(req.data, "dst", "message"),
                  "message": protocol.require_text(req.data, "message", "message")}
        return self._write(req, "message", fields, f"{fields['src']} -> {fields['dst']}")

    @defer.inlineCallbacks
    def _write(self, req: Request, kind: str, fields: dict[str, str], subject: str) -> Any:
        service_ = req.service
        rid = protocol.request_id(req.data, service_)
        op = self.board.by_rid(rid) if rid is not None else None
        if op is not None:
            # A retry: answer as the original was answered, never apply twice.
            if op.id in self.settling:
                yield self.settling[op.id].wait()
            result = self._result(service_, op, subject, retry=True)
            return result
        problem = self.board.check(kind, fields)
        if problem:
            log.info("{service} {subject} clock={clock} -> erro: {why}", service=service_,
                     subject=subject, clock=self.lamport.value, why=problem)
            raise ProtocolError(problem, service_)
        op = self.board.propose(kind, fields, clock=self.lamport.tick(),
                                timestamp=self.physical.now(), rid=rid)
        self.board.apply(op)
        settling = self.settling[op.id] = _Settling()
        try:
            yield self.committer.submit([op.to_dict()])
            yield self._replicate(op)
        finally:
            del self.settling[op.id]
            for d in settling.waiters:
                d.callback(None)
        result = self._result(service_, op, subject, retry=False)
        if self.board.visible(op) and kind in ("publish", "message"):
            self._announce(op)
        return result

    def _result(self, service_: str, op: Op, subject: str, retry: bool) -> dict[str, Any]:
        why = self.board.outcome(op)
        log.info("{service} {subject} clock={clock} op={op}{retry} -> {result}",
                 service=service_, subject=subject, clock=op.clock, op=op.id,
                 retry=" (retry)" if retry else "", result=why and f"erro: {why}" or "ok")
        if why:
            raise ProtocolError(why, service_)
        return protocol.success_data(service_)

    def _announce(self, op: Op) -> None:
        f = op.fields
        if op.kind == "publish":
            topic = f["channel"]
            payload = {"service": "publish", "user": f["user"], "channel": f["channel"],
                       "message": f["message"]}
        else:
            topic = f["dst"]
            payload = {"service": "message", "src": f["src"], "dst": f["dst"],
                       "user": f["src"], "message": f["message"]}
        payload.update(timestamp=op.timestamp, clock=op.clock, id=op.id)
        if not self.publisher.publish(topic, protocol.encode(payload)):
            log.warn("publication of {op} dropped: proxy queue full", op=op.id)

    # -- files -----------------------------------------------------------------------

    def write_files(self) -> None:
        if self.board.applied == self.snapshot_at:
            return
        self.snapshot_at = self.board.applied
        self.files.write(self.board.snapshot())
        self.files_at = self.snapshot_at

    def snapshot(self) -> defer.Deferred | None:
        """Atomically rewrite the four JSON files if anything changed (off the reactor)."""
        if self.board.applied == self.snapshot_at:
            return None
        from twisted.internet import threads

        at = self.snapshot_at = self.board.applied
        views = self.board.views()  # copied here; rendered and written in the thread
        d = threads.deferToThread(lambda: self.files.write(views.render()))
        return d.addCallback(lambda _: setattr(self, "files_at", at))

    @defer.inlineCallbacks
    def reload(self) -> Any:
        """Merge entries of data files changed on disk by someone else, by id."""
        from twisted.internet import threads

        changed = yield threads.deferToThread(self.files.changed_by_others)
        if not changed:
            return
        n, durable = self._take(ops_from_files(changed))
        yield durable
        log.info("reload: {files} changed on disk; merged {n} new entries",
                 files=", ".join(sorted(changed)), n=n)

    # -- sync port (clock, election, Berkeley, status) -------------------------------

    def _on_sync(self, envelope: list[bytes], body: bytes) -> None:
        handlers = {"clock": self._clock, "status": self._status}
        if self.coordination is not None:
            handlers.update(self.coordination.handlers())
        self.responder.handle(lambda out: self.sync.reply(envelope, out), body, handlers)

    def _clock(self, req: Request) -> dict[str, Any]:
        return {"time": self.physical.now()}

    def _status(self, req: Request) -> dict[str, Any]:
        status = {
            "name": self.cfg.name, "rank": self.rank, "ready": self.ready,
            "clock": self.lamport.value, "offset": self.physical.offset(),
            "applied": self.board.applied, "vector": self.board.vector,
            "files_current": self.files_at == self.board.applied,
            "peers": {p.name: p.up for p in self.peers.values()},
        }
        if self.coordination is not None:
            status.update(self.coordination.status())
        return status


def _sleep(clock: Any, seconds: float) -> defer.Deferred:
    from twisted.internet import task

    return task.deferLater(clock, seconds, lambda: None)


class Options(SecureDaemonOptions):
    optParameters = SecureDaemonOptions.optParameters + [
        ["name", None, None, "server name (default: the host name)"],
        ["data", None, "dados", "data directory (journal and JSON files)"],
        ["broker", None, tcp_local("backend"), "broker's DEALER endpoint"],
        ["publish", None, tcp_local("xsub"), "proxy's XSUB endpoint"],
        ["subscribe", None, tcp_local("xpub"), "proxy's XPUB endpoint (topic servers)"],
        ["reference", None, tcp_local("reference"), "reference server endpoint"],
        ["bind", None, "127.0.0.1", "interface for the sync and replication ports ('*': all)"],
        ["host", None, None, "address peers reach this server at (default: --bind, or the "
         "host name when binding all)"],
        ["sync-port", None, config.port("sync"), "clock/election/Berkeley/status port", int],
        ["replication-port", None, config.port("replication"), "replication port", int],
        ["clock-skew", None, 0.0, "start with the physical clock this many seconds off", float],
        ["clock-drift", None, 0.0, "physical clock drift, seconds per second", float],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if self["name"] is None:
            self["name"] = socket.gethostname()
        problem = protocol.name_problem(self["name"], "server")
        if problem:
            raise usage.UsageError(f"--name: {problem}")
        if self["host"] is None:
            self["host"] = socket.gethostname() if self["bind"] in ("*", "0.0.0.0") \
                else self["bind"]


def makeService(options: Options) -> service.MultiService:
    from bbd.services.timers import every

    t = config.timing
    cfg = ServerConfig(
        name=options["name"], data_dir=Path(options["data"]), broker=options["broker"],
        publish=options["publish"], subscribe=options["subscribe"],
        reference=options["reference"], bind=options["bind"], host=options["host"],
        sync_port=options["sync-port"], replication_port=options["replication-port"],
        max_bytes=options["max-bytes"], heartbeat_interval=t("heartbeat_interval"),
        peer_timeout=t("peer_timeout"), anti_entropy_interval=t("anti_entropy_interval"),
        snapshot_interval=t("snapshot_interval"), reload_interval=t("reload_interval"),
        clock_skew=options["clock-skew"], clock_drift=options["clock-drift"],
        berkeley_interval=t("berkeley_interval"),
        berkeley_every=int(t("berkeley_every_messages")),
        election_answer_timeout=t("election_answer_timeout"),
        election_announce_timeout=t("election_announce_timeout"), keys=options["auth"],
    )
    top = service.MultiService()
    server = BoardServer(cfg)
    server.setServiceParent(top)
    from bbd.services.coordination import Coordinator

    # After the server in the MultiService: it starts once the server's socket factory
    # exists, and stops (closing its subscriber) before the server shuts the factory down.
    coordination = server.coordination = Coordinator(
        server, announce_interval=t("announce_interval"),
        coordinator_timeout=t("coordinator_timeout"),
        check_interval=t("coordinator_check_interval"),
        min_round_gap=t("berkeley_min_gap"), max_rtt=t("berkeley_max_rtt"),
        outlier_threshold=t("berkeley_outlier_threshold"))
    coordination.setServiceParent(top)
    # Timers start after the server (MultiService order) and stop before it.
    for interval, fn, what in [
        (cfg.heartbeat_interval, server.periodic_heartbeat, "heartbeat"),
        (cfg.snapshot_interval, server.snapshot, "JSON snapshot"),
        (cfg.reload_interval, server.reload, "JSON reload"),
        (cfg.anti_entropy_interval, server.anti_entropy, "anti-entropy"),
        (0.2, server.watch_for_pause, "pause watch"),
        (coordination.check_interval, coordination.check_coordinator, "coordinator check"),
        (cfg.berkeley_interval, coordination.berkeley_tick, "Berkeley round"),
    ]:
        every(interval, fn, what).setServiceParent(top)
    return top
