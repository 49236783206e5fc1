"""twistd bbd-broker: clients' ROUTER in front; behind it, servers that say when they are
ready (the default), or today's round-robin DEALER relay (``--routing round-robin``) for
servers that speak only the plain request/reply framing."""

from __future__ import annotations

from twisted.application import service
from twisted.python import usage

from bbd.options import SecureDaemonOptions, tcp_any

ROUTINGS = ("readiness", "round-robin")


class Options(SecureDaemonOptions):
    optParameters = SecureDaemonOptions.optParameters + [
        ["frontend", None, tcp_any("frontend"), "ROUTER endpoint clients connect to"],
        ["backend", None, tcp_any("backend"), "endpoint servers connect to"],
        ["status", None, tcp_any("broker_status"),
         "endpoint answering 'status' with the broker's view of each server ('' for none)"],
        ["routing", None, "readiness",
         "readiness (servers announce readiness and credit) or round-robin (plain DEALER)"],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if self["routing"] not in ROUTINGS:
            raise usage.UsageError(f"--routing must be one of {', '.join(ROUTINGS)}")


def makeService(options: Options) -> service.Service:
    top = service.MultiService()
    if options["routing"] == "round-robin":
        from bbd.services import relay

        relay.broker(options["frontend"], options["backend"], options["max-bytes"],
                     options["auth"]).setServiceParent(top)
        return top
    from bbd.loadbalance import Settings
    from bbd.services.balancer import BalancerService

    t = options["timing"]
    settings = Settings(heartbeat=t.broker_heartbeat, liveness=t.broker_liveness,
                        resend_after=t.broker_resend_after)
    BalancerService(options["frontend"], options["backend"], options["status"] or None,
                    options["max-bytes"], settings, options["auth"]).setServiceParent(top)
    return top
