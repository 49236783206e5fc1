"""twistd bbd-proxy: servers publish into XSUB, clients subscribe at XPUB."""

from __future__ import annotations

from twisted.application import service

from bbd.options import SecureDaemonOptions, tcp_any
from bbd.services import relay


class Options(SecureDaemonOptions):
    optParameters = SecureDaemonOptions.optParameters + [
        ["xsub", None, tcp_any("xsub"), "XSUB endpoint servers publish to"],
        ["xpub", None, tcp_any("xpub"), "XPUB endpoint clients subscribe at"],
    ]


def makeService(options: Options) -> service.Service:
    top = service.MultiService()
    relay.proxy(options["xsub"], options["xpub"], options["max-bytes"], options["auth"]) \
        .setServiceParent(top)
    return top
