"""Demo mode (``bbd up --demo``): the launcher's local control of its servers, for teaching.

The launcher owns the processes (its ``ProcessMonitor`` restarts any that dies), so the
buttons of the dashboard end here: the dashboard forwards ``POST /<action>/<server>`` to
this small web resource, which the launcher serves on 127.0.0.1 only, on a port the
system picks, and passes to the dashboard as ``--demo-control``. Actions:

* ``pause``: SIGSTOP (the server stops answering; its peers mark it down, an election
  follows if it coordinated);
* ``resume``: SIGCONT (it notices the pause and catches up before serving again);
* ``kill``: SIGKILL, and the monitor forgets it, so it stays dead until ``restart``;
* ``restart``: start it again if killed (it replays its journal and catches up), or stop
  it gracefully and let the monitor start it again if it runs.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger
from twisted.web import resource

log = Logger()

ACTIONS = ("pause", "resume", "kill", "restart")


@dataclass
class Managed:
    argv: list[str]
    env: dict[str, str]
    cwd: str


class DemoControl(resource.Resource):
    isLeaf = True

    def __init__(self, monitor: Any, servers: dict[str, Managed]) -> None:
        super().__init__()
        self.monitor = monitor
        self.servers = servers

    def render_POST(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        parts = [p.decode("utf-8", "replace") for p in request.postpath if p]
        if len(parts) != 2 or parts[0] not in ACTIONS or parts[1] not in self.servers:
            request.setResponseCode(400)
            return json.dumps({"error": f"expected one of {', '.join(ACTIONS)} and one of "
                                        f"{', '.join(sorted(self.servers))}"}).encode()
        action, name = parts
        try:
            result = getattr(self, action)(name)
        except (KeyError, OSError) as e:
            request.setResponseCode(409)
            return json.dumps({"error": str(e)}).encode()
        log.info("demo: {action} {name}: {result}", action=action, name=name, result=result)
        return json.dumps({"result": result}).encode()

    def _pid(self, name: str) -> int:
        proto = self.monitor.protocols.get(name)
        if proto is None or proto.transport is None or proto.transport.pid is None:
            raise KeyError(f"{name} is not running")
        return int(proto.transport.pid)

    def pause(self, name: str) -> str:
        os.kill(self._pid(name), signal.SIGSTOP)
        return "paused (SIGSTOP)"

    def resume(self, name: str) -> str:
        os.kill(self._pid(name), signal.SIGCONT)
        return "resumed (SIGCONT)"

    def kill(self, name: str) -> str:
        pid = self._pid(name)
        if name in self.monitor.processes:
            self.monitor.removeProcess(name)  # no automatic restart
        os.kill(pid, signal.SIGKILL)
        return "killed (SIGKILL); it stays down until restart"

    def restart(self, name: str) -> str:
        if name in self.monitor.processes:
            os.kill(self._pid(name), signal.SIGCONT)  # a paused process cannot stop
            self.monitor.stopProcess(name)
            return "stopping; the monitor starts it again"
        if name in self.monitor.protocols:
            raise KeyError(f"{name} is still exiting; try again in a moment")
        m = self.servers[name]
        self.monitor.addProcess(name, m.argv, env=m.env, cwd=m.cwd)
        return "started again"


def listen(monitor: Any, servers: dict[str, Managed], reactor: Any) -> str:
    """Serve the control on 127.0.0.1 (local only), on a free port; return its URL."""
    from twisted.web import server

    port = reactor.listenTCP(0, server.Site(DemoControl(monitor, servers)),
                             interface="127.0.0.1")
    return f"http://127.0.0.1:{port.getHost().port}"
