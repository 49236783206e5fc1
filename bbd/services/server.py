"""A replicated board server: wires the pure board to the broker, the proxy, the reference
and its peers.

Life of a write (``login``, ``channel``, ``publish``, ``message``) at its origin:
validate -> propose an operation (Lamport stamp) -> journal (group commit, fsync) -> apply
in memory, so nothing is visible (to reads, pulls, peers) before it is durable -> send to
every live peer and wait for their acks (a peer journals, then applies, then acks, and
returns any competitor it holds) -> decide the outcome by the board's rule -> reply ->
publish, if it is a post or private message that took effect. A journal that cannot be
written (a full or broken disk) refuses the write: ``erro``, nothing applied.

A server takes client requests only once it has caught up with its peers: at start, and
again after it notices it was paused or cut off.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import defer, reactor
from twisted.python import usage

from bbd import auth, opkinds, protocol
from bbd.catchup import Action as CatchUpAction
from bbd.catchup import BeginCatchUp, CatchUp, Paused, ServingChanged
from bbd.commit import GroupCommit
from bbd.config import Timing
from bbd.lamport import LamportClock
from bbd.logs import Logger
from bbd.options import SecureDaemonOptions, tcp_local
from bbd.physclock import PhysicalClock
from bbd.protocol import ProtocolError, Request
from bbd.services.frontend import ClientFrontEnd
from bbd.services.registration import ReferenceLink
from bbd.services.replication import Peer, Replication
from bbd.services.responder import Responder, call
from bbd.services.waiters import Waiters
from bbd.state import Board, Op
from bbd.store import Journal

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
    timing: Timing  # every interval and timeout (etc/bbd.toml, with --timing overrides)
    clock_skew: float = 0.0  # demo knobs: a physical clock started wrong, or drifting
    clock_drift: float = 0.0
    routing: str = "readiness"  # the broker's: readiness (worker link) or round-robin
    credit: int = 32  # requests the broker may have in flight here
    keys: auth.Keys | None = None  # None: authentication off (--no-auth)

    def endpoint(self, port: int) -> str:
        return f"tcp://{self.host}:{port}"


@dataclass
class Hooks:
    """What other parts of the daemon (the coordination) hang on the server, wired by
    makeService: the server calls them and holds no other pointer to those parts."""

    sync_handlers: dict[str, Callable[[Request], Any]] = field(default_factory=dict)
    started: list[Callable[[], None]] = field(default_factory=list)  # serving clients
    peers_changed: list[Callable[[], None]] = field(default_factory=list)
    served: list[Callable[[int], None]] = field(default_factory=list)  # requests so far


class BoardServer(service.Service):
    def __init__(self, cfg: ServerConfig, clock: Any = reactor,
                 exit: Callable[[], None] | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.exit = exit or _stop_reactor
        self.lamport = LamportClock()
        # One clock for everything: the reactor's (a task.Clock in tests), and the physical
        # clock built on it.
        self.physical = PhysicalClock(clock.seconds, skew=cfg.clock_skew, drift=cfg.clock_drift)
        self.responder = Responder(self.lamport, self.physical.now, log)
        self.board = Board(cfg.name)
        self.journal = Journal(cfg.data_dir)  # opened and closed by its JournalService
        self.committer = GroupCommit(self.journal.append, clock)
        # Whether to serve clients: caught up, paused, cut off (bbd/catchup.py).
        self.catchup = CatchUp(clock, pause_threshold=max(1.0, 4 * cfg.timing.heartbeat_interval),
                               check_interval=cfg.timing.pause_check_interval)
        self._tick_call: Any = None  # the catch-up machine's next tick
        # Peers, replication, pulls, catch-up (replication.py), through ``WritePath``.
        self.replication = Replication(self)
        self.committer.after = self.replication.send_due
        # The rank, the heartbeats and the peer list (bbd/services/registration.py). Asks
        # through ``ask`` as looked up at each call (the unit tests replace it).
        self.registration = ReferenceLink(
            cfg, clock, self.lamport, self.physical.now, self.catchup,
            ask=lambda client, service_, data: self.ask(client, service_, data),
            peers_listed=self.replication._update_peers, carry_out=self.carry_out,
            running=lambda: self.running)
        self.settling: dict[str, Waiters] = {}  # own ops between proposal and reply, by id
        # Own ops on their way to the journal, not yet applied (visible only once durable).
        self.unapplied: dict[str, tuple[Op, Waiters]] = {}
        self.storage_error: str | None = None  # why the journal last failed, until it works
        # More status fields from the server's other services (the data files'), by the
        # plugin's makeService.
        self.status_parts: list[Callable[[], dict[str, Any]]] = []
        self.factory = None
        self.guard: auth.Guard | None = None
        self.hooks = Hooks()  # the coordination's (election, Berkeley), by makeService
        self.client_handlers = {
            "login": self._login, "users": self._users, "channel": self._channel,
            "channels": self._channels, "publish": self._publish, "message": self._message,
            "history": self._history,
            # The dialect of some clients of the standard (PROTOCOL.md, extensions).
            "history_messages": self._history_messages,
            "history_channel": self._history_channel,
        }
        # The broker's link, the catch-up queue and the clients' responder
        # (bbd/services/frontend.py); it looks ``_resumed_from_pause`` up at each request
        # (the unit tests replace it).
        self.clients = ClientFrontEnd(
            cfg, clock, self.lamport, self.physical.now, self.client_handlers,
            ready=lambda: self.ready, resumed_from_pause=lambda: self._resumed_from_pause(),
            served=self._served)

    @property
    def ready(self) -> bool:
        """Caught up and serving clients."""
        return self.catchup.ready

    @property
    def rank(self) -> int | None:
        """Given by the reference at registration (None until then, or once written off)."""
        return self.registration.rank

    def carry_out(self, actions: list[CatchUpAction]) -> defer.Deferred | None:
        """Do what the catch-up machine says; the catch-up it began, if any."""
        began = None
        for action in actions:
            if isinstance(action, Paused):
                log.warn("{name} was paused for {gap:.1f} s: catching up before serving",
                         name=self.cfg.name, gap=action.gap)
            elif isinstance(action, BeginCatchUp):
                began = self.replication.catch_up(action.why)
            elif isinstance(action, ServingChanged):
                self.clients.set_ready(action.serving)  # the broker is told at once
                self._schedule_tick()
        return began

    def _schedule_tick(self) -> None:
        """One timer at the machine's next deadline (pause detection while serving)."""
        if self._tick_call is not None and self._tick_call.active():
            self._tick_call.cancel()
        self._tick_call = None
        when = self.catchup.next_deadline()
        if when is not None and self.running:
            self._tick_call = self.clock.callLater(max(0.0, when - self.clock.seconds()),
                                                   self._tick)

    def _tick(self) -> None:
        self._tick_call = None
        began = self.carry_out(self.catchup.tick())
        if began is not None:
            began.addErrback(lambda f: log.failure("catch-up after a pause failed", f))
        self._schedule_tick()

    def _resumed_from_pause(self) -> bool:
        """A long gap since the last tick means we were stopped (SIGSTOP) or starved: the
        others went on without us. Checked on every client request too, because after a
        pause the reactor handles the queued requests before any timer. True if a
        catch-up began."""
        began = self.carry_out(self.catchup.tick())
        if began is None:
            return False
        began.addErrback(lambda f: log.failure("catch-up after a pause failed", f))
        return True

    # -- start and stop --------------------------------------------------------------

    def startService(self) -> None:
        from bbd import sockets

        super().startService()
        # The journal was replayed by the JournalService, started before this one.
        self.factory = sockets.make_factory()
        mb = self.cfg.max_bytes
        # The ZAP guard first: a CURVE port bound without it would admit any key.
        self.guard = auth.Guard(self.factory.context, self.cfg.keys,
                                auth.threadsafe_refusal_logger(log, self.cfg.name)).start()
        inbound, outbound = auth.server_options(self.cfg.keys), auth.client_options(self.cfg.keys)
        self.replication_router = sockets.RouterServer(
            self.factory, [sockets.bind(f"tcp://{self.cfg.bind}:{self.cfg.replication_port}")],
            self._on_replication, mb, inbound)
        self.sync_router = sockets.RouterServer(
            self.factory, [sockets.bind(f"tcp://{self.cfg.bind}:{self.cfg.sync_port}")],
            self._on_sync, mb, inbound)
        self.publisher = sockets.Publisher(
            self.factory, [sockets.connect(self.cfg.publish)], outbound)
        self.registration.open(self.factory)
        self._start_up().addErrback(self._start_failed)

    def _restore(self) -> None:
        """Replay the journal. Damage in its middle is moved aside and logged (the peers
        hold those operations and catch-up fetches them); a stored record that is not an
        operation is skipped and logged, never allowed to stop the start. Records were
        validated before they were written (and their lines are CRC-checked), so only
        their types are checked again here: in C for a block of well-formed records
        (``ops_from_json``), one by one for a block holding any other. The operations
        are then applied in bulk (``Board.load``).

        The cyclic garbage collector is off meanwhile and what was loaded is frozen
        after (``gc.freeze``): it would otherwise scan the millions of new objects again
        and again (a million operations: 4 s to build with it, 2 s without), and every
        full collection later would go through them once more."""
        from bbd import gcpause
        from bbd.state import read_journal

        began = self.clock.seconds()
        with gcpause.held(freeze=True):
            loaded, ops, refused = read_journal(self.journal)
            read = self.clock.seconds()
            self.board.load(ops)
            self.lamport.observe(max((op[0] for op in ops), default=0))
            applied = self.clock.seconds()
            # A journal holding many records of the earlier form (maps), read at half the
            # speed of rows, is upgraded in place, once, when nothing in it was refused
            # or damaged.
            upgrade = loaded.maps >= max(_UPGRADE_AT, len(ops) // 4) and not refused \
                and not loaded.damaged
            if upgrade:
                self.journal.rewrite(ops)
            del ops[:]
        if upgrade:
            log.info("journal: {n} records rewritten as rows in {s:.2f} s ({maps} were maps)",
                     n=self.board.applied, maps=loaded.maps, s=self.clock.seconds() - applied)
        if loaded.torn:
            log.info("journal: cut {cut} bytes of torn tail (a crash mid-write; never "
                     "acknowledged)", cut=loaded.torn)
        for offset, length in loaded.damaged:
            log.error("journal: {length} damaged bytes at offset {offset} moved aside to "
                      "{aside}; the operations on them are fetched from the peers",
                      length=length, offset=offset, aside=str(self.journal.damaged_path))
        for why in refused[:5]:  # the first few reasons
            log.error("journal: skipped an invalid record: {why}", why=why)
        if refused:
            log.error("journal: skipped {n} invalid records in all", n=len(refused))
        log.info("{name}: restored {n} operations from {dir} in {s:.2f} s (journal read "
                 "{read:.2f} s, applied {applied:.2f} s)", name=self.cfg.name,
                 n=self.board.applied, dir=str(self.cfg.data_dir),
                 s=self.clock.seconds() - began, read=read - began, applied=applied - read)

    def _start_failed(self, failure: Any) -> None:
        """A start that cannot finish is not left half-running: say why and exit, so the
        supervisor (procmon, Docker) sees it."""
        log.failure("{name} could not start", failure, name=self.cfg.name)
        self.exit()

    @defer.inlineCallbacks
    def _start_up(self) -> Any:
        while self.running and self.rank is None:
            yield self.registration.heartbeat()
            if self.rank is None:
                yield _sleep(self.clock, self.cfg.timing.heartbeat_interval)
        if not self.running:
            return
        yield self.replication.catch_up("start")
        self.clients.open(self.factory)
        log.info("{name} (rank {rank}) serving clients via {broker}", name=self.cfg.name,
                 rank=self.rank, broker=self.cfg.broker)
        for hook in self.hooks.started:
            hook()

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._tick_call is not None and self._tick_call.active():
            self._tick_call.cancel()
        self._tick_call = None
        return self._stop()

    @defer.inlineCallbacks
    def _stop(self) -> Any:
        self.clients.close()  # the worker link says BYE
        # Writes in flight finish replicating before the links to the peers close: one
        # decided without them would be granted here alone (found by the nemesis: a
        # channel name granted twice across a SIGTERM, no partition involved).
        deadline = self.clock.seconds() + 2 * self.cfg.timing.peer_timeout
        while self.settling and self.clock.seconds() < deadline:
            yield _sleep(self.clock, 0.01)
        yield self.replication.outbox_sent()
        yield self.registration.leave()
        for peer in self.replication.peers.values():
            self.replication._close_peer(peer)
        # The data files are written once more, and the journal closed, by their own
        # services, which stop after this one (persistence.InOrder).
        if self.guard is not None:
            self.guard.stop()
        if self.factory is not None:
            self.factory.shutdown()
            self.factory = None

    # -- asking peers and the reference ---------------------------------------------

    def ask(self, client: Any, service_: str, data: dict[str, Any]) -> defer.Deferred:
        # A link still coming up (a peer just listed or restarted) gets the timeout to
        # connect: failing at once would leave that peer out of the write.
        return call(client, service_, data, lamport=self.lamport, now=self.physical.now,
                    timeout=self.cfg.timing.peer_timeout,
                    connect_wait=self.cfg.timing.peer_timeout)

    # -- client requests -------------------------------------------------------------

    def _served(self, handled: int) -> None:
        for hook in self.hooks.served:
            hook(handled)

    def _users(self, req: Request) -> dict[str, Any]:
        users = self.board.user_list()
        log.info("users: {n} clock={clock}", n=len(users), clock=self.lamport.value)
        return {"users": users}

    def _channels(self, req: Request) -> dict[str, Any]:
        channels = self.board.channel_list()
        log.info("channels: {n} clock={clock}", n=len(channels), clock=self.lamport.value)
        return {"channels": channels}

    def _history(self, req: Request) -> dict[str, Any]:
        return {"messages": self._history_items(req, protocol.history_query(req.data))}

    def _history_channel(self, req: Request) -> dict[str, Any]:
        query = protocol.history_query(req.data, "channel", req.service)
        return {"publications": self._history_items(req, query)}

    def _history_messages(self, req: Request) -> dict[str, Any]:
        query = protocol.history_query(req.data, "user", req.service)
        items = self._history_items(req, query)
        for item in items:
            item["from"], item["to"] = item["src"], item["dst"]
        return {"messages": items}

    def _history_items(self, req: Request, query: tuple[str, str, int, str | None]) -> list:
        kind, name, limit, before = query
        try:
            items = self.board.history(kind, name, limit, before)
        except ValueError as e:
            raise ProtocolError(str(e), req.service) from None
        log.info("{service} {kind} {name}: {n} items clock={clock}", service=req.service,
                 kind=kind, name=name, n=len(items), clock=self.lamport.value)
        return items

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
        data = protocol.with_aliases(req.data, {"src": "from", "dst": "to"})
        fields = {"src": protocol.require_name(data, "src", "message"),
                  "dst": protocol.require_name(data, "dst", "message"),
                  "message": protocol.require_text(data, "message", "message")}
        return self._write(req, "message", fields, f"{fields['src']} -> {fields['dst']}")

    @defer.inlineCallbacks
    def _write(self, req: Request, kind: str, fields: dict[str, str], subject: str) -> Any:
        service_ = req.service
        rid = protocol.request_id(req.data, service_) or req.fallback_id
        if rid is not None:
            # A retry of a write still on its way to the journal: wait for its fate.
            yield self.unapplied_where(lambda own: own.rid == rid)
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
        settling = self.settling[op.id] = Waiters()
        durable = Waiters()
        self.unapplied[op.id] = (op, durable)
        try:
            try:
                yield self.committer.submit([op])  # journaled as a row
            except OSError as e:
                self._storage_failed(op, e)
                raise ProtocolError("storage unavailable on this server (" + e.strerror
                                    + "); the request was not applied", service_) from None
            else:
                self.storage_works()
                self.board.apply(op)
            finally:
                del self.unapplied[op.id]
                durable.fire()
            yield self.replication._replicate(op)
        finally:
            del self.settling[op.id]
            settling.fire()
        result = self._result(service_, op, subject, retry=False)
        if self.board.visible(op) and opkinds.published(kind):
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

    def unapplied_where(self, match: Callable[[Op], bool]) -> defer.Deferred:
        """Fires once every own op that ``match`` picks among those still on their way to
        the journal is applied (or refused). A peer's ``replicate`` waits for its rivals
        here before answering with competitors: an origin holds its own op before its peers
        can learn of it, so two concurrent creators of a name still each learn of the
        other and decide alike."""
        waits = [durable.wait() for own, durable in self.unapplied.values() if match(own)]
        return defer.gatherResults(waits) if waits else defer.succeed(None)

    def _storage_failed(self, op: Op, error: OSError) -> None:
        """The journal batch holding ``op`` was not written (and was cut back): the op never
        existed. Its sequence number is given out again, so the origin's sequence keeps no
        gap (every later own op of that batch, and those queued behind it, failed too)."""
        self.board.next_seq = min(self.board.next_seq, op.seq)
        self.storage_broke(error)

    def storage_broke(self, error: OSError) -> None:
        why = f"{error.strerror or error} ({error.filename or self.journal.path})"
        if self.storage_error is None:
            log.error("storage unavailable: journal write failed: {why}; refusing writes "
                      "until it works again, serving reads", why=why)
        self.storage_error = why

    def storage_works(self) -> None:
        if self.storage_error is not None:
            log.info("storage works again: taking writes")
            self.storage_error = None

    def _announce(self, op: Op) -> None:
        topic, payload = opkinds.publication(op, op.kind)
        if not self.publisher.publish(topic, protocol.encode(payload)):
            log.warn("publication of {op} dropped: proxy queue full", op=op.id)

    def writes_done(self) -> defer.Deferred:
        """Fires once no journal batch is in flight (the data files' last flush waits)."""
        from bbd.services.persistence import until

        return until(self.clock, self.committer.idle)

    # -- replication port, and the hooks replication calls ---------------------------

    def _on_replication(self, envelope: list[bytes], body: bytes) -> None:
        self.responder.handle(lambda out: self.replication_router.reply(envelope, out), body,
                              self.replication.handlers)

    def peers_changed(self) -> None:
        for hook in self.hooks.peers_changed:
            hook()

    @property
    def peers(self) -> dict[str, Peer]:
        """The live peers, as replication knows them (the coordination reads them)."""
        return self.replication.peers

    # -- sync port (clock, election, Berkeley, status) -------------------------------

    def _on_sync(self, envelope: list[bytes], body: bytes) -> None:
        handlers = {"clock": self._clock, "status": self._status, **self.hooks.sync_handlers}
        self.responder.handle(lambda out: self.sync_router.reply(envelope, out), body, handlers)

    def _clock(self, req: Request) -> dict[str, Any]:
        return {"time": self.physical.now()}

    def _status(self, req: Request) -> dict[str, Any]:
        status = {
            "name": self.cfg.name, "rank": self.rank, "ready": self.ready,
            "clock": self.lamport.value, "offset": self.physical.offset(),
            "applied": self.board.applied, "vector": self.board.vector,
            "storage_error": self.storage_error,
            # The reference's last request failed: a catch-up is owed once it answers.
            "reference_lost": self.catchup.reference_lost,
            "peers": {p.name: p.up for p in self.replication.peers.values()},
            "handled": self.clients.handled,  # the dashboard's requests/s
            "catch_ups": dict(self.replication.catch_ups),
            "last_catch_up": self.replication.last_catch_up,
        }
        view = self.clients.view()
        if view is not None:  # what the broker last said of us: routing here, in flight
            status["broker"] = view
        for part in self.status_parts:  # the data files', then the coordination's
            status.update(part())
        return status


# The fewest map records that make a start rewrite its journal as rows.
_UPGRADE_AT = 10_000


def _stop_reactor() -> None:
    if reactor.running:
        reactor.stop()


def _sleep(clock: Any, seconds: float) -> defer.Deferred:
    from twisted.internet import task

    return task.deferLater(clock, seconds, lambda: None)


class Options(SecureDaemonOptions):
    optParameters = SecureDaemonOptions.optParameters + [
        ["name", None, None, "server name (default: $BBD_NAME, else the host name)"],
        ["data", None, "dados", "data directory (journal and JSON files)"],
        ["broker", None, tcp_local("backend"), "broker's DEALER endpoint"],
        ["publish", None, tcp_local("xsub"), "proxy's XSUB endpoint"],
        ["subscribe", None, tcp_local("xpub"), "proxy's XPUB endpoint (topic servers)"],
        ["reference", None, tcp_local("reference"), "reference server endpoint"],
        ["bind", None, "127.0.0.1", "interface for the sync and replication ports ('*': all)"],
        ["host", None, None, "address peers reach this server at (default: $BBD_HOST, else "
         "--bind, or the host name when binding all)"],
        ["sync-port", None, None, "clock/election/Berkeley/status port (default: [ports] "
         "sync)", int],
        ["replication-port", None, None, "replication port (default: [ports] replication)",
         int],
        ["clock-skew", None, 0.0, "start with the physical clock this many seconds off", float],
        ["clock-drift", None, 0.0, "physical clock drift, seconds per second", float],
        ["metrics-port", None, 0, "Prometheus /metrics on this port, on --bind (0: off)", int],
        ["routing", None, "readiness", "the broker's routing: readiness (announce readiness "
         "and credit) or round-robin (plain ROUTER behind today's relay)"],
        ["credit", None, 32, "requests the broker may have in flight at this server", int],
    ]

    config_ports = {"sync-port": "sync", "replication-port": "replication"}

    def postOptions(self) -> None:
        super().postOptions()
        # The command line wins, then the environment (a Kubernetes pod sets its own name
        # and its DNS name under the headless service there), then this host's defaults.
        if self["name"] is None:
            self["name"] = os.environ.get("BBD_NAME") or socket.gethostname()
        problem = protocol.name_problem(self["name"], "server")
        if problem:
            raise usage.UsageError(f"--name: {problem}")
        if self["routing"] not in ("readiness", "round-robin"):
            raise usage.UsageError("--routing must be readiness or round-robin")
        if self["host"] is None:
            self["host"] = os.environ.get("BBD_HOST") or (
                socket.gethostname() if self["bind"] in ("*", "0.0.0.0") else self["bind"])


def _interface(bind: str) -> str:
    return "" if bind in ("*", "0.0.0.0") else bind


def makeService(options: Options) -> service.MultiService:
    """The server daemon: persistence under the board server, its coordination, metrics and
    timers. Stopped in reverse: first the server's group together (as before: the front end
    says BYE, writes in flight finish replicating, the peer links close), then the data files
    are written once more, and the journal closes last."""
    from bbd.services.coordination import CoordinationService
    from bbd.services.persistence import DataFilesService, InOrder, JournalService
    from bbd.services.timers import every

    cfg = _server_config(options)
    t = cfg.timing
    server = BoardServer(cfg)
    files = DataFilesService(cfg.data_dir, server.board, server.replication._take,
                             server.writes_done,
                             snapshot_interval=t.snapshot_interval,
                             reload_interval=t.reload_interval, clock=server.clock,
                             hold=lambda: server.catchup.catching_up)
    server.status_parts.append(files.status)
    # After the server in its group: it starts once the server's socket factory exists,
    # and stops (closing its subscriber) before the server shuts the factory down.
    coordination = CoordinationService(server, t)
    server.status_parts.append(coordination.status)
    server.hooks.sync_handlers.update(coordination.handlers())
    server.hooks.started.append(coordination.started)
    server.hooks.peers_changed.append(coordination.peers_changed)
    server.hooks.served.append(coordination.message_handled)
    group = service.MultiService()
    group.setName("server")
    for name, child in [("write path", server), ("coordination", coordination)]:
        child.setName(name)
        child.setServiceParent(group)
    if options["metrics-port"]:
        from bbd import metrics

        metrics.attach_to_server(server, options["metrics-port"], _interface(cfg.bind)) \
            .setServiceParent(group)
    # Timers start after the server and stop with it.
    for interval, fn, what in [
        (t.heartbeat_interval, server.registration.periodic_heartbeat, "heartbeat"),
        (t.anti_entropy_interval, server.replication.anti_entropy, "anti-entropy"),
        (t.coordinator_check_interval, coordination.check_coordinator, "coordinator check"),
        (t.berkeley_interval, coordination.berkeley_tick, "Berkeley round"),
    ]:
        timer = every(interval, fn, what, clock=server.clock)
        timer.setName(what)
        timer.setServiceParent(group)
    top = InOrder()
    for child in (JournalService(cfg.name, cfg.data_dir, server.journal, server.committer,
                                 server._restore, server.clock), files, group):
        child.setServiceParent(top)
    return top


def _server_config(options: Options) -> ServerConfig:
    return ServerConfig(
        name=options["name"], data_dir=Path(options["data"]), broker=options["broker"],
        publish=options["publish"], subscribe=options["subscribe"],
        reference=options["reference"], bind=options["bind"], host=options["host"],
        sync_port=options["sync-port"], replication_port=options["replication-port"],
        max_bytes=options["max-bytes"], timing=options["timing"],
        clock_skew=options["clock-skew"], clock_drift=options["clock-drift"],
        routing=options["routing"], credit=options["credit"], keys=options["auth"],
    )
