"""Bully election and Berkeley clock synchronisation for one board server.

This is the wiring around two pure cores, ``bbd.election.Bully`` and
``bbd.berkeley.compute_round``: it turns their actions into messages and the messages
back into their events. ``BoardServer`` calls the hooks below; the plugin's
``makeService`` builds one ``CoordinationService`` per server and the timers that drive it.

Election (PROTOCOL.md, "Server to server"):

* ``election`` requests go to the sync port of every higher rank; the reply data is
  ``{"election": "OK"}``. The request carries our ``name`` and ``rank`` (extension
  fields) so the receiver need not look us up; a request without them counts as coming
  from below. A receiver that does not outrank the sender replies ``erro``, which the
  sender treats like no answer.
* The winner publishes ``[b"servers", {"service": "election", "data": {"coordinator",
  "rank", "timestamp", "clock"}}]`` through the proxy, and again every
  ``announce_interval`` (lost announcements and late subscribers heal that way; ``rank``
  is an extension so a server that has not seen the winner in the reference's list yet
  can still judge the claim).
* Failure detection: every server watches its links to its peers (a socket monitor;
  ZMTP heartbeats on every peer link, ``bbd.sockets``): a coordinator whose process died
  is noticed when its connection closes, one that hangs when it stops answering
  heartbeats (``HEARTBEAT_TIMEOUT``, 0.7 s); an election waiting for a peer whose link
  dropped stops waiting. Besides, every ``check_interval`` a follower sends the
  coordinator the
  standard ``clock`` request; a request that goes unanswered (not a ``erro`` reply: that
  is an answer) reports the coordinator failed. So does any other request to it that
  goes unanswered, the coordinator leaving the reference's list, and, as a last resort,
  the lease in the Bully machine (no announcement for ``coordinator_timeout``).
* The election starts once the server knows its rank and has caught up (it serves
  clients): a returning higher server takes the role back only with a current board, so
  the role does not flap while it replays and pulls.

Berkeley (extension messages ``adjust`` and ``berkeley``):

* Only the coordinator runs rounds: it reads every listed peer's ``clock`` (timing each
  request on its own clock), hands the readings to ``compute_round`` and sends each peer
  ``adjust`` with ``{"name": coordinator, "delta": seconds}``; it applies its own
  adjustment directly. Every server slews (``PhysicalClock.adjust``), never jumps back.
* A server accepts ``adjust`` only from the coordinator it follows (or when it knows of
  none yet), so a deposed coordinator cannot pull clocks toward itself.
* Triggers: the ``berkeley_interval`` timer, becoming coordinator, and every
  ``berkeley_every`` client messages *each* server handles: a follower that reaches the
  count asks the coordinator for a round with ``berkeley`` (the broker spreads clients over
  all servers, so counting only the coordinator's own messages would run rounds at a third
  of the standard's rate). Rounds never overlap; triggers closer together than
  ``min_round_gap`` are merged into one round at the end of the gap, which bounds the
  sync-port traffic under heavy load. The schedule is the pure machine in bbd/rounds.py.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from bbd import protocol
from bbd.berkeley import Reading, RoundResult, compute_round
from bbd.config import Timing
from bbd.election import Action, Announce, Bully, CoordinatorChanged, SendElection
from bbd.lamport import LamportClock
from bbd.physclock import PhysicalClock
from bbd.protocol import PeerUnavailable, ProtocolError, Request
from bbd.rounds import RoundSchedule, StartRound
from bbd.services.responder import call

log = Logger()

TOPIC = "servers"
# A Berkeley adjustment beyond this is no clock correction but a fault or a forgery.
MAX_ADJUSTMENT = 24 * 3600.0


def _unanswered(failure: Failure) -> bool:
    """An ``erro`` reply (ProtocolError) proves the peer is alive; anything else does not."""
    return failure.check(ProtocolError) is None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class BoardView(Protocol):
    """What the coordination reads of its server, and nothing more. The server holds no
    pointer back: makeService hangs the coordination's hooks (``handlers``, ``status``,
    ``started``, ``peers_changed``, ``message_handled``) on the server's ``Hooks``."""

    cfg: Any  # ServerConfig: the name, the proxy's XPUB endpoint
    clock: Any  # IReactorTime
    lamport: LamportClock
    physical: PhysicalClock
    publisher: Any  # where the election's results are published, from start on
    factory: Any  # the sockets' factory, from start on (None in unit tests)

    @property
    def rank(self) -> int | None: ...

    @property
    def peers(self) -> Mapping[str, Any]: ...  # name -> Peer (name, rank, sync_client)

    # And ``ready`` (caught up), read where present: a server without it counts as ready.


class CoordinationService(service.Service):
    """Every server's side of the election and of Berkeley; only one server is *the*
    coordinator (``bully.is_coordinator``)."""

    def __init__(self, server: BoardView, timing: Timing, *, clock: Any = None) -> None:
        self.server = server
        self.clock = clock if clock is not None else server.clock
        self.timing = timing
        self.check_interval = timing.coordinator_check_interval
        self.bully: Bully | None = None
        self.last_sync: float | None = None  # our physical clock when we last took an adjustment
        self.last_adjustment: float | None = None
        self.rounds = 0  # Berkeley rounds this server ran as coordinator
        self.subscriber: Any = None
        self._actions: deque[tuple[Bully, Action]] = deque()
        self._draining = False
        self._tick_call: Any = None
        # When Berkeley rounds run (bbd/rounds.py); _round_later is its next deadline's timer.
        self.schedule = RoundSchedule(self.clock, min_gap=timing.berkeley_min_gap)
        self._round_later: Any = None
        self._round_under_way: defer.Deferred | None = None  # the stop waits for it
        self._announced_ranks: dict[str, int] = {}  # heard on `servers`, for the log
        self._watched: list[Any] = []  # peers' sync clients whose links we watch
        self._sent: dict[str, tuple[int, float]] = {}  # follower -> (round, delta) last sent

    # -- service life ------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if self.server.factory is not None:
            from bbd import sockets  # installs the txZMQ reactor: only once a daemon runs

            self.subscriber = sockets.Subscriber(
                self.server.factory, [sockets.connect(self.server.cfg.subscribe)], [TOPIC],
                self.on_publication)
        self._activate()

    def stopService(self) -> defer.Deferred:
        super().stopService()
        for call_ in (self._tick_call, self._round_later):
            if call_ is not None and call_.active():
                call_.cancel()
        self._tick_call = self._round_later = None
        for client in self._watched:
            client.watch(None)
        self._watched = []
        if self.subscriber is not None and self.subscriber.socket is not None:
            self.subscriber.shutdown()
        self.subscriber = None
        # A round under way ends (its requests time out at worst) before the stop is done.
        ended: defer.Deferred = defer.Deferred()
        if self._round_under_way is None:
            ended.callback(None)
        else:
            self._round_under_way.addBoth(lambda result: ended.callback(None) or result)
        return ended

    # -- hooks, hung on the server's Hooks by makeService -----------------------------

    def handlers(self) -> dict[str, Any]:
        return {"election": self._election_in, "adjust": self._adjust_in,
                "berkeley": self._berkeley_in, "adjusted": self._adjusted_in}

    def status(self) -> dict[str, Any]:
        bully = self.bully
        return {
            "coordinator": bully.coordinator if bully else None,
            "election_phase": bully.phase.value if bully else None,
            "last_sync": self.last_sync,
            "last_adjustment": self.last_adjustment,
            "berkeley_rounds": self.rounds,
        }

    def started(self) -> None:
        """The server serves clients: the election normally began at registration already."""
        self._activate()

    def peers_changed(self) -> None:
        if self.bully is not None and self.bully.rank == self.server.rank:
            self._run(self.bully.peers_changed(self._ranks()))
        else:
            self._activate()
        self._watch_links()  # peers' clients may be new

    def message_handled(self, count: int) -> None:
        every = self.timing.berkeley_every_messages
        if every <= 0 or count % every:
            return
        bully = self.bully
        if bully is None or bully.coordinator is None:
            return
        if bully.is_coordinator:
            self.request_round(f"{count} client messages")
            return
        target = bully.coordinator
        d = self._ask(target, "berkeley", {"name": self.own_name, "handled": count},
                      self.timing.peer_timeout)
        d.addErrback(self._coordinator_silent, target, "berkeley")

    # -- election ----------------------------------------------------------------------

    @property
    def own_name(self) -> str:
        return self.server.cfg.name

    def _ranks(self) -> dict[str, int]:
        return {p.name: p.rank for p in self.server.peers.values()}

    def _activate(self) -> None:
        """Create the Bully machine once the rank is known (anew if the rank changed) and
        start the election every server runs when it starts."""
        rank = self.server.rank
        # Only once caught up (serving clients): a returning server does not take the role
        # back with a stale board, and servers that restart together do not each start an
        # election the moment they register.
        if not self.running or rank is None or not getattr(self.server, "ready", True):
            return
        if self.bully is not None and self.bully.rank == rank:
            return
        t = self.timing
        self.bully = Bully(
            self.own_name, rank, self.clock, self._ranks(),
            answer_timeout=t.election_answer_timeout,
            announce_timeout=t.election_announce_timeout,
            announce_interval=t.announce_interval,
            coordinator_timeout=t.coordinator_timeout)
        log.info("election: {name} (rank {rank}) starting, {n} peers known", name=self.own_name,
                 rank=rank, n=len(self.bully.peers))
        self._run(self.bully.start())

    def _run(self, actions: list[Action]) -> None:
        """Carry out a machine's actions in order. A request may fail synchronously and feed
        the machine again from inside this loop, so new actions queue behind the current
        ones instead of running nested."""
        bully = self.bully
        if bully is None:
            return
        self._actions.extend((bully, a) for a in actions)
        if self._draining:
            return
        self._draining = True
        try:
            while self._actions:
                owner, action = self._actions.popleft()
                if owner is self.bully:  # drop actions of a machine since replaced
                    self._do(owner, action)
        finally:
            self._draining = False
        self._reschedule()

    def _do(self, bully: Bully, action: Action) -> None:
        if isinstance(action, SendElection):
            self._send_election(bully, action.to)
        elif isinstance(action, Announce):
            self._announce_coordinator(action)
        elif isinstance(action, CoordinatorChanged):
            self._coordinator_changed(bully, action.name)

    def _coordinator_changed(self, bully: Bully, name: str | None) -> None:
        if name is None:
            log.info("election: coordinator unknown, election under way ({phase})",
                     phase=bully.phase.value)
        elif name == self.own_name:
            log.info("elected {coordinator} (rank {rank}): this server coordinates",
                     coordinator=name, rank=bully.rank)
            self.request_round("elected")
        else:
            rank = bully.peers.get(name, self._announced_ranks.get(name))
            log.info("election: coordinator is now {coordinator}{rank}", coordinator=name,
                     rank="" if rank is None else f" (rank {rank})")

    def _watch_links(self) -> None:
        """Hear at once when the link to a peer drops (its process died, or it stopped
        answering ZMTP heartbeats), instead of at the next ``clock`` probe or timeout."""
        for name, peer in self.server.peers.items():
            client = getattr(peer, "sync_client", None)
            if hasattr(client, "watch") and client not in self._watched:
                client.watch(lambda n=name: self._link_lost(n))
                self._watched.append(client)
        live = [getattr(p, "sync_client", None) for p in self.server.peers.values()]
        self._watched = [c for c in self._watched if c in live]

    def _link_lost(self, name: str) -> None:
        bully = self.bully
        if bully is None:
            return
        if bully.coordinator == name and not bully.is_coordinator:
            log.warn("coordinator {coordinator}'s connection dropped: election",
                     coordinator=name)
            self._run(bully.coordinator_failed(name))
        # An election (maybe already running, started by a lower peer's request) waiting
        # for this peer's answer need not wait any longer.
        self._run(bully.election_request_failed(name))

    def _reschedule(self) -> None:
        """One timer at the machine's next deadline, so its timeouts fire on time without
        polling."""
        if self._tick_call is not None and self._tick_call.active():
            self._tick_call.cancel()
        self._tick_call = None
        if not self.running or self.bully is None:
            return
        when = self.bully.next_deadline()
        if when is not None:
            self._tick_call = self.clock.callLater(max(0.0, when - self.clock.seconds()),
                                                   self._tick)

    def _tick(self) -> None:
        self._tick_call = None
        if self.bully is not None:
            self._run(self.bully.tick())

    def _send_election(self, bully: Bully, to: str) -> None:
        log.info("election: asking {peer} (rank {rank})", peer=to, rank=bully.peers.get(to))

        def answered(data: dict[str, Any]) -> None:
            if self.bully is not bully:
                return
            if data.get("election") == "OK":
                log.info("election: {peer} answered OK, waiting for its announcement", peer=to)
                self._run(bully.ok_received(to))
            else:
                log.info("election: {peer} declined ({why})", peer=to,
                         why=data.get("description", data))
                self._run(bully.election_request_failed(to))

        def failed(failure: Failure) -> None:
            if self.bully is not bully:
                return
            log.info("election: {peer} did not answer ({why})", peer=to,
                     why=failure.getErrorMessage())
            self._run(bully.election_request_failed(to))

        # A link not made yet (every server starting at once) gets the answer timeout to
        # come up; one that dropped (the peer died) fails at once, as the election needs.
        timeout = self.timing.election_answer_timeout
        peer = self.server.peers.get(to)
        lost = getattr(getattr(peer, "sync_client", None), "lost", False)
        d = self._ask(to, "election", {"name": self.own_name, "rank": bully.rank}, timeout,
                      connect_wait=0.0 if lost else timeout)
        d.addCallbacks(answered, failed)

    def _announce_coordinator(self, action: Announce) -> None:
        data = {"coordinator": action.coordinator, "rank": self.server.rank}
        msg = protocol.message("election", data, clock=self.server.lamport.tick(),
                               timestamp=self.server.physical.now())
        sent = self.server.publisher.publish(TOPIC, protocol.encode(msg))
        if action.repeat:
            # Repeated every announce_interval: only a dropped one is news.
            if not sent:
                log.warn("re-announcement of {coordinator} dropped: proxy queue full",
                         coordinator=action.coordinator)
        else:
            log.info("announced {coordinator} (rank {rank}) on {topic}{dropped}",
                     coordinator=action.coordinator, rank=self.server.rank, topic=TOPIC,
                     dropped="" if sent else " (dropped: proxy queue full)")

    def on_publication(self, topic: str, payload: bytes) -> None:
        """An announcement on ``servers`` (our own ones come back too)."""
        try:
            req = protocol.decode(payload)
        except ProtocolError as e:
            log.info("ignored undecodable {topic} publication: {why}", topic=topic,
                     why=e.description)
            return
        if req.service != "election":
            return
        try:
            self.server.lamport.observe(protocol.received_clock(req.data))
        except ProtocolError as e:
            log.warn("ignored {topic} publication: {why}", topic=topic, why=e.description)
            return
        name = req.data.get("coordinator")
        if not isinstance(name, str) or self.bully is None:
            return
        rank = req.data.get("rank")
        rank = rank if protocol.is_count(rank) else None
        if rank is not None:
            self._announced_ranks[name] = rank  # for the log, before the reference lists it
        if name == self.bully.coordinator or name == self.own_name:
            self._run(self.bully.announcement_received(name, rank))
            return
        # Anyone may publish on the proxy when authentication is off: a change of
        # coordinator is believed only once the named server, at the address the reference
        # lists for it, confirms that it coordinates.
        peer = self.server.peers.get(name)
        if peer is None or (rank is not None and rank != peer.rank):
            log.warn("election: ignored announcement of {coordinator} (rank {rank}): not a "
                     "listed server with that rank", coordinator=name, rank=rank)
            return
        bully = self.bully

        def confirmed(data: dict[str, Any]) -> None:
            if self.bully is not bully:
                return
            if data.get("coordinator") != name:
                log.warn("election: ignored announcement of {coordinator}: it does not say "
                         "it coordinates", coordinator=name)
                return
            log.info("election: announcement of {coordinator} (rank {rank})",
                     coordinator=name, rank=peer.rank)
            self._run(bully.announcement_received(name, peer.rank))

        # The announcer has often just come back (restarted, resumed): our link to it may
        # still be reconnecting, so the confirmation waits for it rather than failing at
        # once, which would leave us announcing a rival and start another round.
        timeout = self.timing.peer_timeout
        d = self._ask(name, "status", {}, timeout, connect_wait=timeout)
        d.addCallbacks(confirmed, lambda f: log.info(
            "election: announcement of {coordinator} not confirmed ({why})",
            coordinator=name, why=f.getErrorMessage()))

    def _election_in(self, req: Request) -> dict[str, Any]:
        bully = self.bully
        if bully is None:
            raise ProtocolError("not registered yet: no rank to compare", "election")
        sender = req.data.get("name")
        sender = sender if isinstance(sender, str) else ""
        rank = req.data.get("rank")
        rank = rank if protocol.is_count(rank) else None
        ok, actions = bully.election_request_received(sender, rank)
        log.info("election: request from {peer} (rank {from_rank}) -> {answer}",
                 peer=sender or "?", from_rank=rank, answer="OK" if ok else "declined")
        self._run(actions)
        if not ok:
            raise ProtocolError(f"{self.own_name} (rank {bully.rank}) does not outrank the sender",
                                "election")
        return {"election": "OK"}

    def check_coordinator(self) -> defer.Deferred | None:
        """Timer body: a follower's liveness probe of its coordinator (the standard's
        ``clock`` request)."""
        bully = self.bully
        if bully is None or bully.coordinator is None or bully.is_coordinator:
            return None
        target = bully.coordinator
        if target not in self.server.peers:
            # Announced before our next list refresh reached it: nothing to probe yet, and
            # a coordinator that never shows up is caught by the lease.
            return None
        d = self._ask(target, "clock", {}, self.timing.peer_timeout)
        return d.addErrback(self._coordinator_silent, target, "clock")

    def _coordinator_silent(self, failure: Failure, target: str, what: str) -> None:
        if not _unanswered(failure):
            return
        bully = self.bully
        if bully is None or bully.coordinator != target:
            return  # stale: the coordinator changed meanwhile
        log.warn("coordinator {coordinator} did not answer {request} ({why}): election",
                 coordinator=target, request=what, why=failure.getErrorMessage())
        self._run(bully.coordinator_failed(target))

    def _ask(self, to: str, service_: str, data: dict[str, Any],
             timeout: float, connect_wait: float = 0.0) -> defer.Deferred:
        peer = self.server.peers.get(to)
        client = getattr(peer, "sync_client", None)
        if client is None:
            return defer.fail(ConnectionError(f"{to}: not in the reference's list"))
        return call(client, service_, data, lamport=self.server.lamport,
                    now=self.server.physical.now, timeout=timeout, connect_wait=connect_wait)

    # -- Berkeley ----------------------------------------------------------------------

    def berkeley_tick(self) -> defer.Deferred | None:
        """Timer body (``berkeley_interval``)."""
        return self.request_round("timer")

    def request_round(self, why: str) -> defer.Deferred | None:
        """Run a round now if this server coordinates; the schedule (bbd/rounds.py) merges
        triggers that come while one runs or within ``min_round_gap`` of the last."""
        if not self._coordinates():
            return None
        return self._start_rounds(self.schedule.request(why))

    def _coordinates(self) -> bool:
        return self.running and self.bully is not None and self.bully.is_coordinator

    def _start_rounds(self, actions: list[StartRound]) -> defer.Deferred | None:
        """Carry out the schedule's actions (at most one round); the round started, if any."""
        started = None
        for action in actions:
            started = self._round(action.why)
            started.addErrback(lambda f: log.failure("Berkeley round failed", f))
            started.addBoth(self._round_done)
            if not started.called:
                self._round_under_way = started
        self._schedule_round_tick()
        return started

    def _schedule_round_tick(self) -> None:
        """One timer at the schedule's next deadline (a merged trigger)."""
        if self._round_later is not None and self._round_later.active():
            self._round_later.cancel()
        self._round_later = None
        when = self.schedule.next_deadline()
        if when is not None and self.running:
            self._round_later = self.clock.callLater(max(0.0, when - self.clock.seconds()),
                                                     self._round_tick)

    def _round_tick(self) -> None:
        self._round_later = None
        if not self._coordinates():
            self.schedule.drop_pending()
        self._start_rounds(self.schedule.tick())

    def _round_done(self, _: Any) -> None:
        self._round_under_way = None
        if not self._coordinates():
            self.schedule.drop_pending()
        self._start_rounds(self.schedule.finished())

    @defer.inlineCallbacks
    def _round(self, why: str) -> Any:
        names = [n for n, p in self.server.peers.items()
                 if getattr(p, "sync_client", None) is not None]
        results = yield defer.DeferredList([self._read_clock(n) for n in names],
                                           consumeErrors=True)
        readings: dict[str, Reading | None] = {
            n: (r if ok else None) for n, (ok, r) in zip(names, results, strict=True)}
        bully = self.bully
        if bully is None or not bully.is_coordinator:
            log.info("Berkeley round ({why}) abandoned: no longer coordinator", why=why)
            return None
        result = compute_round(self.own_name, readings, max_rtt=self.timing.berkeley_max_rtt,
                               outlier_threshold=self.timing.berkeley_outlier_threshold)
        self.rounds += 1
        self._log_round(why, result, readings)
        sends = []
        for name, delta in result.adjustments.items():
            if name == self.own_name:
                self.apply_adjustment(delta, self.own_name)
            else:
                self._sent[name] = (self.rounds, delta)  # what ``adjusted`` confirms
                d = self._ask(name, "adjust",
                              {"name": self.own_name, "delta": delta, "round": self.rounds},
                              self.timing.peer_timeout)
                d.addErrback(self._adjust_failed, name)
                sends.append(d)
        yield defer.DeferredList(sends)
        return result

    @defer.inlineCallbacks
    def _read_clock(self, name: str) -> Any:
        now = self.server.physical.now
        t_send = now()
        data = yield self._ask(name, "clock", {}, self.timing.peer_timeout)
        t_recv = now()
        server_time = _number(data.get("time"))
        if server_time is None:
            raise ProtocolError(f"{name}: clock reply without a numeric 'time'", "clock")
        return Reading(t_send, server_time, t_recv)

    def _log_round(self, why: str, result: RoundResult,
                   readings: dict[str, Reading | None]) -> None:
        rtts = {n: round(r.rtt * 1000, 3) for n, r in readings.items() if r is not None}
        log.info(
            "Berkeley round {round} ({why}): target {target:+.6f} s; offsets {offsets}; "
            "rtt ms {rtts}; outliers {outliers}; too slow {too_slow}; failed {failed}",
            round=self.rounds, why=why, target=result.target,
            offsets={n: round(o, 6) for n, o in result.offsets.items()}, rtts=rtts,
            outliers=list(result.outliers), too_slow=list(result.too_slow),
            failed=list(result.failed))

    def _adjust_failed(self, failure: Failure, name: str) -> None:
        log.info("Berkeley: adjustment for {peer} not applied ({why})", peer=name,
                 why=failure.getErrorMessage())

    def apply_adjustment(self, delta: float, by: str) -> None:
        physical = self.server.physical
        physical.adjust(delta)
        self.last_sync = physical.now()
        self.last_adjustment = delta
        log.info("clock adjustment {delta:+.6f} s from {coordinator}: slewing, offset now "
                 "{offset:+.6f} s", delta=delta, coordinator=by, offset=physical.offset())

    @defer.inlineCallbacks
    def _adjust_in(self, req: Request) -> Any:
        """Believed only from the coordinator we follow, and only once it confirms, at the
        address the reference lists for it, that it sent this adjustment (anyone can put a
        coordinator's name in a request when authentication is off)."""
        delta = _number(req.data.get("delta"))
        if delta is None or abs(delta) > MAX_ADJUSTMENT:
            raise ProtocolError("adjust needs a numeric 'delta' (seconds) of at most "
                                f"{MAX_ADJUSTMENT:.0f} s either way", "adjust")
        sender = req.data.get("name")
        following = self.bully.coordinator if self.bully is not None else None
        if following is None or sender != following or following == self.own_name:
            log.warn("refused clock adjustment {delta:+.6f} s from {peer}: following "
                     "{coordinator}", delta=delta, peer=sender, coordinator=following)
            raise ProtocolError(f"not following {sender}: coordinator is {following}", "adjust")
        try:
            sent = yield self._ask(following, "adjusted", {"name": self.own_name},
                                   self.timing.peer_timeout)
        except (PeerUnavailable, ProtocolError) as e:
            raise ProtocolError(f"{following} did not confirm the adjustment ({e})",
                                "adjust") from None
        if sent.get("round") != req.data.get("round") or _number(sent.get("delta")) != delta:
            log.warn("refused clock adjustment {delta:+.6f} s in {sender}'s name: it did "
                     "not send it", delta=delta, sender=sender)
            raise ProtocolError(f"{following} did not send this adjustment", "adjust")
        self.apply_adjustment(delta, str(sender))
        return {"status": "OK"}

    def _adjusted_in(self, req: Request) -> dict[str, Any]:
        """The last adjustment this coordinator sent to ``name`` (for its confirmation)."""
        sent = self._sent.get(str(req.data.get("name")))
        if sent is None or self.bully is None or not self.bully.is_coordinator:
            raise ProtocolError("no adjustment sent to that server", "adjusted")
        return {"round": sent[0], "delta": sent[1]}

    def _berkeley_in(self, req: Request) -> dict[str, Any]:
        if self.bully is None or not self.bully.is_coordinator:
            raise ProtocolError(f"{self.own_name} is not the coordinator", "berkeley")
        sender = req.data.get("name")
        self.request_round(f"{sender} handled {req.data.get('handled')} client messages")
        return {"status": "OK"}
