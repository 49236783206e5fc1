# twistd plugins for the BulletInBoard daemons. Lazy: a ServiceMaker names its module and
# imports it only when that daemon is started (importing txZMQ installs a reactor).
from twisted.application.service import ServiceMaker

broker = ServiceMaker("bbd-broker", "bbd.services.broker",
                      "BulletInBoard broker: clients ROUTER <-> servers DEALER", "bbd-broker")
proxy = ServiceMaker("bbd-proxy", "bbd.services.proxy",
                     "BulletInBoard pub/sub proxy: XSUB <-> XPUB", "bbd-proxy")
reference = ServiceMaker("bbd-reference", "bbd.services.reference",
                         "BulletInBoard reference: ranks, heartbeats, live servers",
                         "bbd-reference")
server = ServiceMaker("bbd-server", "bbd.services.server",
                      "BulletInBoard replicated board server", "bbd-server")
dashboard = ServiceMaker("bbd-dashboard", "bbd.services.dashboard",
                         "BulletInBoard live dashboard (web page, Server-Sent Events, metrics)",
                         "bbd-dashboard")
