"""What ``bbd up`` tells the console about its daemons: busy ports before anything starts,
and daemons that keep dying right after they start (pure: no sockets, no reactor)."""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

# A twistd log line: "<timestamp> [<system>] <text>".
_LOG_PREFIX = re.compile(r"^\S+ \[[^\]]*\] ")
# The last line of a traceback ("zmq.error.ZMQError: Address already in use").
_ERROR_LINE = re.compile(r"^[\w.]*(Error|Exception|Exit|Interrupt)\b.*")


def port_in_use(host: str, port: int) -> bool:
    """True if something already listens on ``host:port``. SO_REUSEADDR as ZeroMQ sets it,
    so sockets of a board that just stopped (TIME_WAIT) do not count as busy."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return e.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def busy_ports(wanted: Iterable[tuple[str, int]], host: str,
               in_use: Callable[[str, int], bool] = port_in_use) -> list[tuple[str, int]]:
    """The (role, port) pairs of ``wanted`` that cannot be bound on ``host``."""
    return [(role, port) for role, port in wanted if in_use(host, port)]


def busy_message(busy: list[tuple[str, int]], host: str, base: int, span: int) -> str:
    """One line: which port, whose, and what to do about it."""
    role, port = busy[0]
    more = f" (and {len(busy) - 1} more of its ports)" if len(busy) > 1 else ""
    return (f"bbd up: port {port} on {host} ({role}) is already in use{more}. Is another "
            f"board running? Stop it, or move this one with --base-port N (it uses ports "
            f"N to N+{span - 1}; now N={base}).")


def last_error(log_text: str) -> str | None:
    """The last exception line of a twistd log, without the log's prefix."""
    for raw in reversed(log_text.splitlines()):
        line = _LOG_PREFIX.sub("", raw).strip()
        if _ERROR_LINE.match(line):
            return line
    return None


@dataclass
class Verdict:
    line: str  # what the console says
    give_up: bool  # stop restarting this daemon


@dataclass
class CrashWatch:
    """Counts deaths that come right after a start. One is worth a line; ``limit`` in a row
    is a loop that restarting will not fix, so the launcher stops restarting that daemon."""

    quick: float = 10.0  # seconds: dying sooner than this after a start is a failed start
    limit: int = 5
    streak: dict[str, int] = field(default_factory=dict)

    def exited(self, name: str, uptime: float, how: str, error: str | None,
               log_hint: str | None) -> Verdict:
        why = f": {error}" if error else ""
        see = f" (see {log_hint})" if log_hint else ""
        if uptime >= self.quick:
            self.streak[name] = 0
            return Verdict(f"{name} {how} after {uptime:.1f} s{why}; restarting it", False)
        n = self.streak[name] = self.streak.get(name, 0) + 1
        if n >= self.limit:
            return Verdict(f"{name} failed {n} times in a row right after starting{why}; "
                           f"no more restarts: fix the cause and run bbd up again{see}", True)
        if n > 1:
            see = ""  # said with the first failure
        again = "again " if n > 1 else ""
        return Verdict(f"{name} {how} {again}{uptime:.1f} s after starting{why}; "
                       f"restarting it ({n}/{self.limit}){see}", False)
