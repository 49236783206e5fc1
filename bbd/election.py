"""Bully election as a pure state machine: events in, actions out.

Every server has a unique, stable rank (from the reference server); the live
server with the highest rank must end up coordinator, and every server must
agree on it.

How one election runs:

1. A server that needs a coordinator (at boot, when the coordinator is found
   dead, or when a lower server claims the role) sends ``election`` to every
   server ranked above it.
2. A live higher server answers ``OK``: "I am here, I will take it from here",
   and runs its own election unless it is already running one. If it already
   is the coordinator it simply announces itself again.
3. A server that hears no ``OK`` within ``answer_timeout`` (or whose every
   request failed outright) knows nobody above it is alive: it becomes
   coordinator and *announces* itself (the service publishes that on topic
   ``servers``).
4. A server that did get an ``OK`` waits ``announce_timeout`` for the winner's
   announcement; if none comes, the one that answered died meanwhile, so it
   starts over.

An announcement from a higher rank is accepted. One from a lower rank is
never accepted: the receiver "bullies back" by starting an election of its
own, which is how a returning higher server takes the role back.

Messages can be lost, and a single lost ``OK`` or announcement could leave two
servers each believing itself coordinator. Two additions close that gap:

* the coordinator re-announces itself every ``announce_interval``, so a lower
  server that missed the first announcement, or wrongly won an election,
  hears it and yields, and a higher server hears a lower claim and bullies;
* a follower that hears nothing from its coordinator for
  ``coordinator_timeout`` treats it as failed (a lease), so nobody follows a
  dead server forever even if the service never reports the failure.

Together they make the outcome a fixed point: once messages flow again, only
the highest live server keeps announcing, and everybody accepts it.

The machine does no I/O. The service feeds it events (each returns the list of
actions to carry out), calls ``tick()`` regularly (or at ``next_deadline()``),
and reads ``coordinator`` for its status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol


class Seconds(Protocol):
    def seconds(self) -> float: ...


@dataclass(frozen=True)
class SendElection:
    """Send an ``election`` request to peer ``to``; report its fate with
    ``ok_received`` or ``election_request_failed``."""

    to: str


@dataclass(frozen=True)
class Announce:
    """Publish ``coordinator`` on topic ``servers``. ``repeat`` marks the periodic
    re-announcement (nothing changed), which the service may log more quietly."""

    coordinator: str
    repeat: bool = False


@dataclass(frozen=True)
class CoordinatorChanged:
    """The coordinator this server believes in changed (None: unknown, electing)."""

    name: str | None


Action = SendElection | Announce | CoordinatorChanged


class Phase(Enum):
    IDLE = "idle"  # a coordinator is known (or none is needed yet)
    ELECTING = "electing"  # asked the higher ranks, waiting for an OK
    WAITING = "waiting"  # got an OK, waiting for the winner's announcement


class Bully:
    def __init__(
        self,
        name: str,
        rank: int,
        clock: Seconds,
        peers: Mapping[str, int] | None = None,
        *,
        answer_timeout: float = 0.5,
        announce_timeout: float = 1.5,
        announce_interval: float = 1.0,
        coordinator_timeout: float | None = 3.0,
    ) -> None:
        # A lease shorter than the re-announce period would expire on a healthy coordinator.
        if coordinator_timeout is not None and coordinator_timeout <= announce_interval:
            raise ValueError("coordinator_timeout must exceed announce_interval")
        self.name = name
        self.rank = rank
        self.answer_timeout = answer_timeout
        self.announce_timeout = announce_timeout
        self.announce_interval = announce_interval
        self.coordinator_timeout = coordinator_timeout
        self._clock = clock
        self.peers: dict[str, int] = {}
        self._set_peers(peers or {})
        self.coordinator: str | None = None
        self.phase = Phase.IDLE
        self._deadline: float | None = None  # end of ELECTING or WAITING
        self._unanswered: set[str] = set()  # higher peers asked, neither OK nor failure yet
        self._next_announce: float | None = None  # while coordinator
        self._lease_expiry: float | None = None  # while following someone

    # -- queries -------------------------------------------------------------

    @property
    def is_coordinator(self) -> bool:
        return self.coordinator == self.name

    def next_deadline(self) -> float | None:
        """The earliest time at which ``tick()`` has something to do."""
        times = [
            t for t in (self._deadline, self._next_announce, self._lease_expiry) if t is not None
        ]
        return min(times) if times else None

    # -- events --------------------------------------------------------------

    def start(self) -> list[Action]:
        """The server booted: find out who leads (Bully always elects at boot)."""
        if self.phase is not Phase.IDLE:
            return []
        return self._start_election()

    def coordinator_failed(self, name: str | None = None) -> list[Action]:
        """The coordinator stopped answering. ``name``, if given, guards against a
        stale report about a server that is no longer the coordinator."""
        if name is not None and name != self.coordinator:
            return []
        if self.is_coordinator:
            return []  # we are alive by definition
        actions = self._set_coordinator(None)
        if self.phase is Phase.IDLE:
            actions += self._start_election()
        return actions

    def peers_changed(self, peers: Mapping[str, int]) -> list[Action]:
        """A new list of live servers from the reference (self may be included)."""
        old = self.peers
        self._set_peers(peers)
        if self.phase is Phase.ELECTING:
            # Stop waiting for peers that left; ask higher ones that just appeared.
            new_higher = sorted(n for n, r in self.peers.items() if r > self.rank and n not in old)
            self._unanswered = (self._unanswered & self.peers.keys()) | set(new_higher)
            actions: list[Action] = [SendElection(to=n) for n in new_higher]
            if not self._unanswered:
                actions += self._win()
            return actions
        if self.phase is Phase.WAITING:
            return []  # the announce_timeout already covers a winner that vanished
        current = self.coordinator
        if current is None:
            return self._start_election()
        if current == self.name:
            # A higher server registered: challenge it, it takes over if alive.
            if any(r > self.rank for n, r in self.peers.items() if n not in old):
                return self._start_election()
            return []
        if current in old and current not in self.peers:
            # The reference dropped our coordinator: it missed its heartbeats.
            return self._set_coordinator(None) + self._start_election()
        if current in self.peers and self.peers[current] < self.rank:
            return self._start_election()  # we outrank it: bully
        return []

    def election_request_received(
        self, from_name: str, from_rank: int | None = None
    ) -> tuple[bool, list[Action]]:
        """Another server asks us to take over. Returns (answer OK?, actions)."""
        rank = from_rank if from_rank is not None else self.peers.get(from_name)
        if rank is not None and rank >= self.rank:
            # The sender thinks we outrank it; we do not (stale ranks): say no.
            return False, []
        if self.phase is not Phase.IDLE:
            return True, []  # our own election is under way and will end in an announcement
        if self.is_coordinator:
            # The sender missed (or never saw) our announcement: repeat it.
            self._next_announce = self._now() + self.announce_interval
            return True, [Announce(self.name)]
        return True, self._start_election()

    def ok_received(self, from_name: str) -> list[Action]:
        """A higher server answered our ``election``: it will take over."""
        if self.phase is Phase.ELECTING:
            self.phase = Phase.WAITING
            self._deadline = self._now() + self.announce_timeout
            self._unanswered.clear()
        return []

    def election_request_failed(self, to_name: str) -> list[Action]:
        """Our ``election`` to ``to_name`` could not be delivered: it is down."""
        if self.phase is not Phase.ELECTING:
            return []
        self._unanswered.discard(to_name)
        # Everybody above us is down: no point waiting out the timeout.
        return self._win() if not self._unanswered else []

    def announcement_received(self, name: str, rank: int | None = None) -> list[Action]:
        """``name`` announced itself coordinator (on topic ``servers``)."""
        if name == self.name:
            return []  # our own publication coming back
        if rank is None:
            rank = self.peers.get(name)
        if rank is not None and rank < self.rank:
            # A lower server claims the role: bully it (unless we are already electing).
            return self._start_election() if self.phase is Phase.IDLE else []
        # Higher (or not in our list yet: peers_changed re-checks once it is).
        self.phase = Phase.IDLE
        self._deadline = None
        self._unanswered.clear()
        actions = self._set_coordinator(name)
        self._renew_lease()
        return actions

    def tick(self, now: float | None = None) -> list[Action]:
        """Fire whatever timeout has expired. ``now`` defaults to the clock."""
        if now is None:
            now = self._now()
        if self.phase is Phase.ELECTING:
            if self._deadline is not None and now >= self._deadline:
                return self._win()  # nobody above answered
            return []
        if self.phase is Phase.WAITING:
            if self._deadline is not None and now >= self._deadline:
                return self._start_election()  # the one that said OK never announced
            return []
        if self.coordinator is None:
            return self._start_election()
        if self.is_coordinator:
            if self._next_announce is not None and now >= self._next_announce:
                self._next_announce = now + self.announce_interval
                return [Announce(self.name, repeat=True)]
            return []
        if self._lease_expiry is not None and now >= self._lease_expiry:
            return self._set_coordinator(None) + self._start_election()
        return []

    # -- internals -----------------------------------------------------------

    def _now(self) -> float:
        return self._clock.seconds()

    def _set_peers(self, peers: Mapping[str, int]) -> None:
        self.peers = {n: r for n, r in peers.items() if n != self.name}

    def _start_election(self) -> list[Action]:
        higher = sorted(n for n, r in self.peers.items() if r > self.rank)
        if not higher:
            return self._win()
        self.phase = Phase.ELECTING
        self._deadline = self._now() + self.answer_timeout
        self._unanswered = set(higher)
        return [SendElection(to=n) for n in higher]

    def _win(self) -> list[Action]:
        self.phase = Phase.IDLE
        self._deadline = None
        self._unanswered.clear()
        actions = self._set_coordinator(self.name)
        self._next_announce = self._now() + self.announce_interval
        return [Announce(self.name), *actions]

    def _set_coordinator(self, name: str | None) -> list[Action]:
        if name != self.name:
            self._next_announce = None
        if name is None or name == self.name:
            self._lease_expiry = None
        if name == self.coordinator:
            return []
        self.coordinator = name
        return [CoordinatorChanged(name)]

    def _renew_lease(self) -> None:
        if self.coordinator_timeout is not None:
            self._lease_expiry = self._now() + self.coordinator_timeout
