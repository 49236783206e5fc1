"""Registration with the reference: the rank, the heartbeats, the peer list, the goodbye.

A part of the server daemon with no pointer back to the server: it is handed what it
needs (the configuration, the clock, the catch-up machine, how to ask and what to do
with each peer list and each catch-up action) and owns the reference's link, the rank
and the token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from bbd import auth, protocol
from bbd.catchup import Action as CatchUpAction
from bbd.catchup import CatchUp
from bbd.lamport import LamportClock
from bbd.protocol import PeerUnavailable, ProtocolError
from bbd.services.responder import call

log = Logger()

# What to do with the reference's list: the listed (live) servers, and every server it
# ever ranked.
PeersListed = Callable[[list[Any], Any], None]
# Ask a link (the reference's, here) for a service: the server's ``ask``.
Ask = Callable[[Any, str, dict[str, Any]], defer.Deferred]


class ReferenceLink:
    def __init__(self, cfg: Any, clock: Any, lamport: LamportClock,
                 now: Callable[[], float], catchup: CatchUp, ask: Ask,
                 peers_listed: PeersListed,
                 carry_out: Callable[[list[CatchUpAction]], defer.Deferred | None],
                 running: Callable[[], bool]) -> None:
        self.cfg = cfg  # ServerConfig
        self.clock = clock
        self.lamport = lamport
        self.now = now  # the physical clock
        self.catchup = catchup
        self.ask = ask
        self.peers_listed = peers_listed
        self.carry_out = carry_out  # the server's: readiness to the front end, catch-ups
        self.running = running
        self.client: Any = None  # the reference's DealerClient, from open on
        self.rank: int | None = None
        self.token = ""  # proves to the reference that our name is ours
        self._warned = False  # a line said so; the next success says it is back
        self._started_at = clock.seconds()

    def open(self, factory: Any) -> None:
        """At the server's start, once its socket factory exists."""
        from bbd import sockets

        self.token = auth.name_token(self.cfg.keys, self.cfg.name) \
            if self.cfg.keys is not None else auth.server_token(self.cfg.data_dir)
        self.client = sockets.DealerClient(
            factory, self.cfg.reference, self.clock, self.cfg.max_bytes,
            auth.client_options(self.cfg.keys))
        self._started_at = self.clock.seconds()

    @defer.inlineCallbacks
    def leave(self) -> Any:
        """Stopping on purpose: off the reference's list now, so the peers stop counting
        on us at their next list (their socket monitors see our links close as well),
        not after the heartbeat expiry. A reference that does not answer soon is left to
        the expiry."""
        if self.rank is None or self.client is None:
            return
        try:
            yield call(self.client, "leave", {"user": self.cfg.name, "token": self.token},
                       lamport=self.lamport, now=self.now,
                       timeout=min(0.5, self.cfg.timing.peer_timeout))
            log.info("{name} left the reference's list", name=self.cfg.name)
        except (PeerUnavailable, ProtocolError) as e:
            log.info("reference not told we are stopping ({why}); it will notice",
                     why=str(e))

    @defer.inlineCallbacks
    def periodic_heartbeat(self) -> Any:
        """The heartbeat timer, from the first registration on (start-up registers by
        itself), also while catching up: a catch-up longer than the reference's expiry
        must not drop us from its list. Coming back from a cut-off (the reference
        unreachable, or it had written us off) means the others may have gone on without
        us: catch up before serving again."""
        if not self.catchup.heartbeats():
            return
        yield self.heartbeat()
        began = self.carry_out(self.catchup.heartbeat_done(registered=self.rank is not None))
        if began is not None:
            yield began

    @defer.inlineCallbacks
    def read_list(self) -> Any:
        """Ask the reference for its list now and hand it on."""
        reply = yield self.ask(self.client, "list", {})
        self.peers_listed(reply.get("list") or [], reply.get("registered"))

    @defer.inlineCallbacks
    def heartbeat(self) -> Any:
        """Register (rank) or heartbeat, then refresh the peer list."""
        try:
            if self.rank is None:
                reply = yield self.ask(self.client, "rank", {
                    "user": self.cfg.name, "token": self.token,
                    "sync": self.cfg.endpoint(self.cfg.sync_port),
                    "replication": self.cfg.endpoint(self.cfg.replication_port)})
                if not protocol.is_count(reply.get("rank")):
                    raise ProtocolError(f"reference replied without a rank: {reply!r:.80}",
                                        "rank")
                self.rank = reply["rank"]
                log.info("{name} registered with rank {rank}", name=self.cfg.name,
                         rank=self.rank)
            else:
                reply = yield self.ask(self.client, "heartbeat",
                                       {"user": self.cfg.name, "token": self.token})
                if reply.get("status") == "unknown":
                    log.warn("reference does not know {name}: registering again",
                             name=self.cfg.name)
                    self.rank = None
                    self.catchup.written_off()
                    return
            yield self.read_list()
            if self._warned:
                log.info("reference {ref} reachable again", ref=self.cfg.reference)
            self.catchup.reference_answered()
            self._warned = False
        except (PeerUnavailable, ProtocolError) as e:
            self.catchup.reference_failed()
            if not self.running() or self._warned:
                return  # stopping, or already said: log changes, not repetitions
            if self.catchup.ready:
                log.warn("reference {ref} unreachable ({why}); keeping the last peer list",
                         ref=self.cfg.reference, why=str(e))
                self._warned = True
            elif self.clock.seconds() - self._started_at > self.cfg.timing.reference_patience:
                # At start the reference is often still starting too: only a long wait is
                # worth a line.
                log.warn("still waiting for the reference {ref} after {s:.0f} s ({why})",
                         ref=self.cfg.reference, s=self.clock.seconds() - self._started_at,
                         why=str(e))
                self._warned = True
        except Exception:
            # A bug here, not the reference: its traceback, and the reference counted as
            # lost (so a catch-up follows once it works), never "unreachable" alone.
            log.failure("{name}: registration or heartbeat failed", name=self.cfg.name)
            self.catchup.reference_failed()
