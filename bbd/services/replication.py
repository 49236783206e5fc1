"""Active replication, catch-up and anti-entropy for a board server.

A part of ``BoardServer`` (``server.replication``), reaching the write path only through
the ``WritePath`` it declares: it holds the peers (from the reference's list), sends each
journal batch of own operations to every live peer and takes in their competitors, serves
``replicate`` and ``pull`` on the replication port, and pulls what this server lacks: at
start, after a pause or a cut-off, and every anti-entropy round. The protocol is described
in the README's replication section.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet import defer
from twisted.python.failure import Failure

from bbd import auth, entitlement, gcpause, protocol
from bbd.catchup import CatchUp
from bbd.commit import GroupCommit
from bbd.lamport import LamportClock
from bbd.logs import Logger
from bbd.protocol import PeerUnavailable, ProtocolError, Request
from bbd.services.waiters import Waiters
from bbd.state import Board, Op, ops_from_dicts, ops_from_rows

log = Logger()

# The most own operations a replicate carries ahead of its batch to fill a peer's gap; a
# larger gap is left to the peer's pull.
MAX_FILL = 1000
# The most operations a pull page holds (the frame budget cuts it first, at ~190 bytes an
# operation), and the room a page leaves in a frame for the reply's envelope.
MAX_PAGE = 20_000
PAGE_MARGIN = 64 << 10
# A catch-up that took this many operations freezes them (``gc.freeze``): long-lived.
FREEZE_AFTER = 10_000


@dataclass
class Peer:
    name: str
    rank: int
    replication: str
    sync: str
    up: bool = True
    repl_client: Any = None
    sync_client: Any = None


class WritePath(Protocol):
    """What replication needs from the server's write path, and nothing more."""

    cfg: Any  # ServerConfig
    clock: Any  # IReactorTime
    board: Board
    lamport: LamportClock
    committer: GroupCommit
    catchup: CatchUp
    registration: Any  # ReferenceLink: the rank, heartbeats, the reference's list

    @property
    def running(self) -> bool: ...

    @property
    def rank(self) -> int | None: ...

    @property
    def ready(self) -> bool: ...  # caught up and serving clients

    @property
    def factory(self) -> Any: ...  # the sockets' factory, from start on

    def ask(self, client: Any, service_: str, data: dict[str, Any]) -> defer.Deferred: ...

    def carry_out(self, actions: list[Any]) -> defer.Deferred | None: ...

    def unapplied_where(self, match: Callable[[Op], bool]) -> defer.Deferred: ...

    def storage_works(self) -> None: ...

    def storage_broke(self, error: OSError) -> None: ...

    def peers_changed(self) -> None: ...


class Replication:
    """Peers, replication, pulls and catch-up: a part the server owns, which reaches the
    write path only through ``WritePath``."""

    def __init__(self, host: WritePath) -> None:
        self.host = host
        self.peers: dict[str, Peer] = {}
        self.registered: dict[str, dict] = {}  # every server the reference ever ranked
        # Peers' ops taken and on their way to the journal, by id, with who waits for that
        # batch: a replicate that follows them is no gap (entitlement), and the same op
        # arriving again (a pull page, a gap fill) waits for that batch, not journaled twice.
        self.incoming: dict[str, Waiters] = {}
        self._outbox: list[tuple[Op, defer.Deferred]] = []
        self._outbox_call: Any = None
        self._sends: set[defer.Deferred] = set()  # outbox sends under way
        self.catch_ups: dict[str, int] = {}  # catch-ups finished, by why they began
        self.last_catch_up: dict[str, Any] | None = None  # why, operations taken, seconds
        # The replication port's services.
        self.handlers = {"replicate": self._replicate_in, "pull": self._pull_in}

    # -- peers ---------------------------------------------------------------------

    def _update_peers(self, listing: list[dict[str, Any]], registered: Any = None) -> None:
        if isinstance(registered, list):
            self.registered.update({e["name"]: e for e in registered
                                    if isinstance(e, dict) and isinstance(e.get("name"), str)})
        seen = set()
        for entry in listing if isinstance(listing, list) else []:
            if isinstance(entry, dict) and self._add_peer(entry):
                seen.add(entry["name"])
        for name in list(self.peers):
            if name not in seen:
                log.info("peer {peer} left the reference's list", peer=name)
                self._close_peer(self.peers.pop(name))
        self.host.peers_changed()

    def _add_peer(self, entry: dict[str, Any]) -> bool:
        """Know (or refresh) a peer from a listing entry; False if the entry is unusable
        or is this server itself."""
        from bbd import sockets

        name = entry.get("name")
        if name == self.host.cfg.name or not isinstance(name, str):
            return False
        if not isinstance(entry.get("replication"), str):
            return False
        rank = entry.get("rank")
        peer = self.peers.get(name)
        if peer is not None and peer.replication == entry["replication"]:
            if protocol.is_count(rank):
                peer.rank = rank
            return True
        if peer is not None:
            self._close_peer(peer)
        peer = Peer(name, rank if protocol.is_count(rank) else 0, entry["replication"],
                    entry.get("sync") if isinstance(entry.get("sync"), str) else "")
        outbound = auth.client_options(self.host.cfg.keys)
        peer.repl_client = sockets.DealerClient(
            self.host.factory, peer.replication, self.host.clock, self.host.cfg.max_bytes, outbound)
        # Its process died or hangs (the socket monitor saw the link drop): out of the next
        # writes at once, not after a request's timeout; its next pull brings it back.
        peer.repl_client.watch(lambda: self._peer_down(peer, "connection dropped"))
        if peer.sync:
            peer.sync_client = sockets.DealerClient(
                self.host.factory, peer.sync, self.host.clock, self.host.cfg.max_bytes, outbound)
        self.peers[name] = peer
        log.info("peer {peer} (rank {rank}) joined at {ep}", peer=name, rank=peer.rank,
                 ep=peer.replication)
        return True

    def _identity(self) -> dict[str, Any]:
        return {"name": self.host.cfg.name, "rank": self.host.rank,
                "replication": self.host.cfg.endpoint(self.host.cfg.replication_port),
                "sync": self.host.cfg.endpoint(self.host.cfg.sync_port)}

    def _close_peer(self, peer: Peer) -> None:
        for client in (peer.repl_client, peer.sync_client):
            if client is not None:
                client.close()

    def _peer_down(self, peer: Peer, why: str) -> None:
        if peer.up:
            peer.up = False
            log.warn("peer {peer} is not answering ({why}); it will catch up later",
                     peer=peer.name, why=why)

    # -- entitlement: what we believe from peers ------------------------------------

    def _known_origins(self) -> set[str]:
        return {self.host.cfg.name, *self.host.board.vector, *self.peers, *self.registered}

    def _admissible(self, ops: list[Op], source: str) -> list[Op]:
        """Drop (and log) operations from ``source`` that we must not believe."""
        known = self._known_origins()
        keep = []
        for op in ops:
            problem = entitlement.foreign_problem(op, self.host.board, known)
            if problem:
                log.warn("refused operation from {source}: {why}", source=source, why=problem)
            else:
                keep.append(op)
        return keep

    # -- replication -----------------------------------------------------------------

    def _replicate(self, op: Op) -> defer.Deferred:
        """Queue a durable own operation for every live peer. One replicate round is out
        at a time: operations made durable while it is out wait, and leave together when
        it ends, so batches grow with the load (measured under 16 clients: one operation
        a message when every journal batch left on its own) and need no timer."""
        d: defer.Deferred = defer.Deferred()
        self._outbox.append((op, d))
        self._pump()
        return d

    def _pump(self) -> None:
        """Start the next round if none is out. It waits for this turn of the reactor, so
        that every operation of one journal batch (answered together) leaves in it."""
        if self._outbox and not self._sends and self._outbox_call is None:
            self._outbox_call = self.host.clock.callLater(0, self._outbox_due)

    def send_due(self) -> None:
        """A journal batch was just made durable and its writers queued their operations:
        the round waiting for the next turn leaves now, with every one of them."""
        call_ = self._outbox_call
        if call_ is not None and hasattr(call_, "cancel") and call_.active():
            call_.cancel()
            self._outbox_due()

    def _outbox_due(self) -> defer.Deferred:
        """Send the outbox, keeping the send until it ends (the stop waits for it)."""
        d = self._send_outbox()
        self._sends.add(d)

        def ended(result: Any) -> Any:
            self._sends.discard(d)
            self._pump()
            return result

        return d.addBoth(ended)

    @defer.inlineCallbacks
    def outbox_sent(self) -> Any:
        """At stop: a round still waiting for its turn is sent now (its timer cancelled,
        so none is left behind), and so is each one after it; returns once the outbox is
        empty and the last round ended, when every write waiting for its replicates has
        been answered."""
        while True:
            self.send_due()
            if not self._sends:
                return
            yield defer.gatherResults(list(self._sends))

    @defer.inlineCallbacks
    def _send_outbox(self) -> Any:
        self._outbox_call = None
        batch, self._outbox = self._outbox, []
        try:
            ops, budget = [op for op, _ in batch], self._page_bytes()
            while ops:
                # Rows (the tuples as they are, encoded in C), as pull pages are sent.
                chunk = _page(ops, budget, rows=True)
                ops = ops[len(chunk):]
                peers = [p for p in self.peers.values() if p.up]
                data = {"rows": chunk}
                results = yield defer.DeferredList(
                    [self.host.ask(p.repl_client, "replicate", data) for p in peers],
                    consumeErrors=True)
                refused = [i for i, (ok, r) in enumerate(results)
                           if ok and r.get("status") != "OK"]
                if refused:
                    # A peer that missed earlier operations of ours (it was starting, or cut
                    # off) refuses the gap: send it what it lacks with the batch, so the write
                    # is acknowledged with its copy too.
                    filled = yield defer.DeferredList(
                        [self._fill_gap(peers[i], results[i][1], chunk) for i in refused],
                        consumeErrors=True)
                    for i, result in zip(refused, filled, strict=True):
                        results[i] = result
                competitors = []
                for peer, (ok, reply) in zip(peers, results, strict=True):
                    if not ok:
                        self._peer_down(peer, reply.getErrorMessage())
                        continue
                    if reply.get("status") != "OK":
                        # Refused, and the gap was too large to send: leave it out until its
                        # next pull has caught it up.
                        self._peer_down(peer, f"refused: {reply.get('description')}")
                        continue
                    competitors += self._admissible(
                        [Op.from_dict(c) for c in reply.get("competitors") or []], peer.name)
                if competitors:
                    # Held (durable, then applied) before the writes are decided: an op
                    # that beats ours must count in its outcome.
                    _, durable = self._take(competitors)
                    yield durable
        except ProtocolError as e:
            log.error("competitors of {n} operations not taken: {why}", n=len(batch),
                      why=e.description)
        except Exception:
            log.failure("replication of {n} operations failed", n=len(batch))
        finally:
            for _, d in batch:
                d.callback(None)

    def _fill_gap(self, peer: Peer, refusal: dict[str, Any], chunk: list[Op]) -> Any:
        """Resend ``chunk`` to a peer that refused it for a gap, preceded by the own
        operations it lacks (from the ``have`` its refusal names), if they fit in one page;
        otherwise the refusal stands and the peer's pull catches it up."""
        have = refusal.get("have")
        first = chunk[0].seq
        if not protocol.is_count(have) or have >= first - 1 or first - 1 - have > MAX_FILL:
            return defer.succeed(refusal)
        lacking = [self.host.board.get(self.host.cfg.name, seq) for seq in range(have + 1, first)]
        if any(op is None for op in lacking):
            return defer.succeed(refusal)
        ops = [*lacking, *chunk]
        if len(protocol.encode(ops)) > self._page_bytes():
            return defer.succeed(refusal)
        log.info("peer {peer} lacks {n} operations of ours before {op}: sending them along",
                 peer=peer.name, n=len(lacking), op=chunk[0].id)
        return self.host.ask(peer.repl_client, "replicate", {"rows": ops})

    def _take(self, ops: Iterable[Op]) -> tuple[int, defer.Deferred]:
        """Take operations from a peer or a file: how many were new, and a Deferred that
        fires once they are durable here and then applied (one journal submission for
        all), so that nothing is visible before it is durable. An operation already on its
        way to the journal from an earlier call is not written again: this call waits for
        that batch, and fails like it if it failed."""
        fresh: list[Op] = []
        for op in ops:
            self.host.lamport.observe(op.clock)
            if not self.host.board.holds(op):
                fresh.append(op)
        return self._land(fresh, bulk=False)

    def _land(self, ops: list[Op], bulk: bool) -> tuple[int, defer.Deferred]:
        """Journal, then apply, operations not held here (one of each id): those already
        on their way to the journal are waited for instead. How many were written, and a
        Deferred that fires once all are durable and applied. ``bulk``: a pull page,
        applied in one call with the collector held off."""
        if not ops:
            return 0, defer.succeed(None)
        by_id = {op.id: op for op in ops}
        if len(by_id) < len(ops):  # the same one twice: journaled once
            ops = list(by_id.values())
        host, incoming = self.host, self.incoming
        if incoming.keys().isdisjoint(by_id):
            new, elsewhere = ops, []
        else:  # some already on their way to the journal
            new = [op for op in ops if op.id not in incoming]
            elsewhere = [op for op in ops if op.id in incoming]
        waits = [incoming[op.id].wait() for op in elsewhere]
        if new:
            batch = Waiters()
            new_ids = [op.id for op in new]
            incoming.update(dict.fromkeys(new_ids, batch))

            def landed(result: Any) -> Any:
                for op_id in new_ids:
                    if incoming.get(op_id) is batch:
                        del incoming[op_id]
                if not isinstance(result, Failure):
                    host.storage_works()
                    if bulk:
                        with gcpause.held():
                            host.board.apply_many(new)
                    else:
                        for op in new:
                            host.board.apply(op)
                batch.fire()  # after the apply: its waiters check what is held
                return result

            waits.append(host.committer.submit(new).addBoth(landed))

        def failed(failure: Any) -> None:
            failure = failure.value.subFailure if failure.check(defer.FirstError) else failure
            failure.trap(OSError)
            host.storage_broke(failure.value)
            raise ProtocolError("storage unavailable on " + host.cfg.name, "replicate")

        def held(_: Any) -> None:
            if not all(host.board.holds(op) for op in elsewhere):
                raise ProtocolError("storage unavailable on " + host.cfg.name, "replicate")

        d = defer.gatherResults(waits, consumeErrors=True) if len(waits) > 1 else waits[0]
        return len(new), d.addCallbacks(held, failed)

    def _mark_up(self, peer: Peer | None) -> None:
        if peer is not None and not peer.up:
            peer.up = True
            log.info("peer {peer} is answering again", peer=peer.name)

    def _replicate_in(self, req: Request) -> Any:
        """Take an origin's batch (rows, or maps from a peer that sends them) and answer
        once it is durable here. Plain callbacks: this runs for every write on every
        peer."""
        rows, raw = req.data.get("rows"), req.data.get("ops")
        try:
            if isinstance(rows, list):
                ops = ops_from_rows(rows)
            elif isinstance(raw, list):
                ops = ops_from_dicts(raw)
            else:
                raise ValueError("replicate needs a 'rows' or an 'ops' list")
        except ValueError as e:
            raise ProtocolError(str(e), "replicate") from None
        problem = entitlement.replicate_problem(ops, self.host.board, self.host.cfg.name,
                                                self._known_origins(), self.incoming.keys())
        if problem:
            log.warn("refused replicate of {n} operations: {why}", n=len(ops), why=problem)
            refusal = protocol.error_data("replicate", f"refused: {problem}")
            if ops and ops[0].origin in self._known_origins():
                # Where the origin's operations stop here, for it to fill a gap.
                refusal["have"] = entitlement.held_top(ops[0].origin, self.host.board,
                                                       self.incoming.keys())
            return refusal
        _, durable = self._take(ops)
        # Journaled before we ack: the origin may then tell its client.
        return durable.addCallback(self._replicated, ops)

    def _replicated(self, _: Any, ops: list[Op]) -> Any:
        """Once our own writes that compete with ``ops`` on a key have landed (so they
        count), the acknowledgement with the operations held that beat ``ops``."""
        keys = {key for op in ops for key in op.keys()}
        rivals = self.host.unapplied_where(lambda own: not keys.isdisjoint(own.keys())) \
            if keys else None

        def ack(_: Any = None) -> dict[str, Any]:
            if ops:
                self._mark_up(self.peers.get(ops[0].origin))
            beaten = {c.id: c for op in ops for c in self.host.board.competitors(op)}
            return {"status": "OK", "competitors": [c.to_dict() for c in beaten.values()]}

        return ack() if rivals is None else rivals.addCallback(ack)

    @defer.inlineCallbacks
    def _pull_in(self, req: Request) -> Any:
        vector = req.data.get("vector")
        if not isinstance(vector, dict):
            raise ProtocolError("pull needs a 'vector' map", "pull")
        vector = {str(k): v for k, v in vector.items() if protocol.is_count(v)}
        # Only a server the reference registered may pull (the log holds private messages).
        # A peer that pulls is about to serve: from now on it must get every new write, so
        # a name we do not list yet makes us read the reference's list now (it may be
        # catching up so long that it missed its heartbeats: registered is enough). Its
        # endpoints come from the reference, never from the request.
        sender = req.data.get("from")
        name = sender.get("name") if isinstance(sender, dict) else None
        if isinstance(name, str) and name not in self.peers and name != self.host.cfg.name:
            yield self.host.registration.read_list()
            if name not in self.peers and name in self.registered:
                self._add_peer(self.registered[name])
        if not isinstance(name, str) or name not in self.peers:
            log.warn("refused pull from {name}: not a server the reference registered",
                     name=name if isinstance(name, str) else "an anonymous requester")
            raise ProtocolError("pull is for the board's listed servers only", "pull")
        self._mark_up(self.peers[name])
        after = req.data.get("after")
        cursor = (after[0], after[1]) if isinstance(after, list) and len(after) == 2 \
            and isinstance(after[0], str) and protocol.is_count(after[1]) else None
        # A page as large as both ends' frames allow (the puller says its own budget).
        asked = req.data.get("budget")
        budget = min(asked, self._pull_budget()) if protocol.is_count(asked) \
            and asked >= 1024 else self._page_bytes()
        ops, more = self.host.board.missing_for(vector, MAX_PAGE, cursor)
        if req.data.get("form") == "rows":  # a puller that reads rows: the tuples as they are
            rows = _page(ops, budget, rows=True)
            return {"rows": rows, "more": more or len(rows) < len(ops)}
        page = _page(ops, budget)
        return {"ops": page, "more": more or len(page) < len(ops)}

    @defer.inlineCallbacks
    def pull_from(self, peer: Peer) -> Any:
        """Fetch everything ``peer`` holds beyond our version vector; the number taken.
        Pages come back to back: the next one is asked for (past the cursor) as soon as a
        page arrives, before it is checked and journaled here."""
        taken = 0

        def ask(after: list[Any] | None) -> defer.Deferred:
            return self.host.ask(peer.repl_client, "pull", {
                "vector": dict(self.host.board.vector), "from": self._identity(), "after": after,
                "budget": self._pull_budget(), "form": "rows"})

        pending: defer.Deferred | None = ask(None) if self.host.running else None
        try:
            while self.host.running and pending is not None:
                reply = yield pending
                pending = None
                # Rows (tuples) from a peer that sends them, else maps; either way checked
                # as Op.from_dict checks each operation.
                rows, raw = reply.get("rows"), reply.get("ops")
                if not isinstance(rows if rows is not None else raw, list):
                    raise ProtocolError(f"{peer.name}: pull reply without an 'ops' list", "pull")
                last = (rows or raw or [None])[-1]
                if reply.get("more") and isinstance(last, list | tuple) and len(last) > 2:
                    pending = ask([last[1], last[2]])
                elif reply.get("more") and isinstance(last, dict):
                    pending = ask([last.get("origin"), last.get("seq")])
                ops = ops_from_rows(rows) if rows is not None else ops_from_dicts(raw)
                n, durable = self._take_page(ops, peer.name)
                yield durable
                taken += n
        finally:
            if pending is not None:  # given up on: its answer, or failure, goes nowhere
                pending.addErrback(lambda _: None)
        self._mark_up(peer)
        return taken

    def _pull_budget(self) -> int:
        """The largest pull page this server takes: its frame limit, less room for the
        reply's envelope."""
        return max(1024, self.host.cfg.max_bytes - PAGE_MARGIN)

    def _take_page(self, ops: list[Op], source: str) -> tuple[int, defer.Deferred]:
        """``_take(_admissible(ops, source))`` for a pull page, with the same outcome,
        at a fraction of their cost per operation (a new server takes a million): the
        entitlement checked against the board directly, the Lamport clock observed once,
        the operations journaled as they are (rows) and applied in one call."""
        host, board = self.host, self.host.board
        known = self._known_origins()
        get = board.get
        admitted: list[Op] = []
        top = 0
        for op in ops:
            held = get(op[1], op[2])
            if op[1] in known and (held is None or held == op):
                if op[0] > top:
                    top = op[0]
                if held is None:
                    admitted.append(op)
            else:
                log.warn("refused operation from {source}: {why}", source=source,
                         why=entitlement.foreign_problem(op, board, known))
        host.lamport.observe(top)
        return self._land(admitted, bulk=True)

    @defer.inlineCallbacks
    def _pull_or_mark_down(self, peer: Peer) -> Any:
        """``pull_from``, with a peer that does not answer (or answers nonsense) marked
        down instead of failing the caller; the number of operations taken."""
        try:
            return (yield self.pull_from(peer))
        except (PeerUnavailable, ProtocolError, ValueError) as e:
            self._peer_down(peer, str(e))
        except Exception:
            log.failure("pull from {peer} failed", peer=peer.name)
            self._peer_down(peer, "pull failed (a bug: see the traceback)")
        return 0

    @defer.inlineCallbacks
    def catch_up(self, why: str) -> Any:
        """Pull from every listed peer before (again) serving clients (the catch-up
        machine, bbd/catchup.py, says when)."""
        self.host.carry_out(self.host.catchup.begin())
        began = self.host.clock.seconds()
        total = 0
        # The collector is held off while the pages come (a new server makes a million
        # operations), and what they brought is frozen after a large catch-up.
        gcpause.hold()
        try:
            yield self.host.registration.heartbeat()
            for peer in list(self.peers.values()):
                total += yield self._pull_or_mark_down(peer)
        finally:
            gcpause.release(freeze=total >= FREEZE_AFTER)
        took = self.host.clock.seconds() - began
        log.info("caught up after {why}: {n} operations from {peers} peers in {s:.3f} s",
                 why=why, n=total, peers=len(self.peers), s=took)
        # In the status: what tests and operators read, rather than the log's wording.
        self.catch_ups[why] = self.catch_ups.get(why, 0) + 1
        self.last_catch_up = {"why": why, "ops": total, "seconds": round(took, 3)}
        self.host.carry_out(self.host.catchup.finished())

    def _page_bytes(self) -> int:
        """The budget of one replicate or pull message: well under the frame limit, since
        a frame over it makes ZeroMQ drop the link, and that peer would never catch up."""
        return self.host.cfg.max_bytes // 2

    @defer.inlineCallbacks
    def anti_entropy(self) -> Any:
        if not self.host.ready:
            return
        for peer in list(self.peers.values()):
            n = yield self._pull_or_mark_down(peer)
            if n:
                log.info("anti-entropy: {n} missing operations from {peer}", n=n,
                         peer=peer.name)


def _page(ops: list[Op], budget: int, rows: bool = False) -> list[Any]:
    """The first of ``ops`` (at least one), as many as take at most ``budget`` bytes
    encoded: as rows (the tuples themselves, encoded in C), or as dicts, each made once
    and only for those sent. How many fit is guessed from a sample's size, then checked
    by encoding the page (in C)."""
    if not ops:
        return []
    sample = ops[:64] if rows else [op.to_dict() for op in ops[:64]]
    size = len(protocol.encode(sample))
    if len(sample) == len(ops) and size <= budget:
        return sample  # the usual replicate round: all of it, encoded once here
    n = max(1, min(len(ops), int(budget * len(sample) / size)))
    page = ops[:n] if rows else sample[:n] + [op.to_dict() for op in ops[len(sample):n]]
    while n > 1:
        size = len(protocol.encode(page))
        if size <= budget:
            break
        n = max(1, min(n - 1, int(n * budget / size * 0.98)))
        del page[n:]
    return page
