"""twistd bbd-broker: clients' ROUTER in front, servers' DEALER behind, round-robin."""

from __future__ import annotations

from twisted.application import service

from bbd.options import DaemonOptions, tcp_any
from bbd.services import relay


class Options(DaemonOptions):
    optParameters = DaemonOptions.optParameters + [
        ["frontend", None, tcp_any("frontend"), "ROUTER endpoint clients connect to"],
        ["backend", None, tcp_any("backend"), "DEALER endpoint servers connect to"],
    ]


def makeService(options: Options) -> service.Service:
    top = service.MultiService()
    relay.broker(options["frontend"], options["backend"], options["max-bytes"]) \
        .setServiceParent(top)
    return top
