"""The ``bbd`` command: ``up`` (run the board locally), ``status``, ``probe``, ``bench``,
``chaos`` (the nemesis and checker)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from bbd import config, probe
from bbd.bench import BENCH_NAME


def _floats(text: str) -> list[float]:
    try:
        return [float(x) if x.strip() else 0.0 for x in text.split(",")]
    except ValueError:
        why = f"expected numbers separated by commas: {text!r}"
        raise argparse.ArgumentTypeError(why) from None


def _glue_negative_lists(argv: list[str]) -> list[str]:
    """``--clock-skews -3,0,5`` would read as an unknown option ``-3,0,5``: glue it on."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--clock-skews" and arg.startswith("-"):
            out[-1] = f"--clock-skews={arg}"
        else:
            out.append(arg)
    return out


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1024 <= value <= 65000:
        raise argparse.ArgumentTypeError(f"{value} is outside 1024..65000")
    return value


def _local(base: int | None, name: str) -> str:
    """The endpoint of a standard port on this machine, moved with ``--base-port``."""
    port = config.port(name)
    if base is not None:
        port += base - config.port("frontend")
    return f"tcp://127.0.0.1:{port}"


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown after each option, except where there is none or the text says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    fmt = _Help
    parser = argparse.ArgumentParser(
        prog="bbd", description="BulletInBoard tools: run a board on this machine, look at "
        "it, load it. 'bbd COMMAND --help' describes each command's options.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    frontend = config.port("frontend")
    base_help = ("first port of a board moved off the standard ones, as given to bbd up "
                 f"--base-port (default: the standard ports of etc/bbd.toml, broker {frontend})")
    up = sub.add_parser(
        "up", formatter_class=fmt, help="start reference, proxy, broker, servers (and bots)",
        description="Start the whole board on 127.0.0.1, each daemon its own twistd process, "
        "restarted if it dies; Ctrl-C or SIGTERM stops them all. Every port is checked "
        f"first. Ports: broker {frontend}-{frontend + 1}, proxy {frontend + 2}-"
        f"{frontend + 3}, reference {frontend + 4}, server i sync and replication "
        f"{config.port('sync')}+2(i-1) and the next one; --base-port moves them all.")
    up.add_argument("--servers", type=int, default=3, help="number of replicated servers")
    up.add_argument("--bots", type=int, default=0, help="number of JS bots to run")
    up.add_argument("--bot-interval", type=float, default=3.0, metavar="SECONDS",
                    help="bots' pause between operations (0: as fast as possible)")
    up.add_argument("--data", type=Path, default=Path("run"),
                    help="directory for each daemon's pid, log and data files")
    up.add_argument("--base-port", type=_port, default=frontend, metavar="N",
                    help="move every port: broker N and N+1, proxy N+2 and N+3, reference "
                    "N+4, broker status N+5, servers from N+6 up; bots and the printed client "
                    "command follow")
    up.add_argument("--clock-skews", type=_floats, default=[], metavar="S1,S2,...",
                    help="per-server physical clock skew in seconds, e.g. -3,0,5 (default: none)")
    up.add_argument("--dashboard-port", type=int, default=None, metavar="N",
                    help=f"the live dashboard's web port (default {config.port('dashboard')}, "
                    "moved with --base-port; 0: no dashboard)")
    up.add_argument("--no-auth", action="store_true",
                    help="classroom mode: internal ports open to anyone (see README)")
    up.add_argument("--demo", action="store_true",
                    help="dashboard buttons to pause, resume, kill and restart servers")
    up.add_argument("--metrics-base", type=int, default=None, metavar="N",
                    help="server i serves Prometheus /metrics on port N+i-1 (default "
                    f"{config.port('metrics')}, moved with --base-port; 0: off)")
    st = sub.add_parser(
        "status", formatter_class=fmt, help="one row per live server",
        description="Ask the reference for the live servers, then each server for its "
        "state: rank, readiness, coordinator, Lamport clock, clock offset, last "
        "synchronisation, operations applied.")
    st.add_argument("--reference", default=None,
                    help="reference endpoint (default: tcp://127.0.0.1:"
                    f"{config.port('reference')}, or the one of --base-port)")
    st.add_argument("--broker", default=None,
                    help="the broker's status endpoint, its view of each server (default: "
                    f"tcp://127.0.0.1:{config.port('broker_status')}, or the one of "
                    "--base-port)")
    st.add_argument("--base-port", type=_port, default=None, metavar="N", help=base_help)
    st.add_argument("--keys", type=Path, default=Path("run") / "keys",
                    help="the board's keys (without them, ask as a board running --no-auth)")
    st.add_argument("--timeout", type=float, default=1.0, metavar="SECONDS",
                    help="how long to wait for each answer")
    keys = sub.add_parser("keys", formatter_class=fmt,
                          help="create the board's CURVE keys in DIR if missing")
    keys.add_argument("dir", type=Path, help="where the keys go (owner only)")
    pr = sub.add_parser("probe", formatter_class=fmt,
                        help="exit 0 if a daemon answers (Kubernetes probes)")
    pr.add_argument("daemon", choices=probe.DAEMONS, help="which daemon to ask")
    pr.add_argument("--endpoint", help="default: this host's port for the daemon in "
                    "etc/bbd.toml (a server's sync port, the reference's port)")
    pr.add_argument("--ready", action="store_true",
                    help="server: also require it registered and caught up")
    pr.add_argument("--timeout", type=float, default=1.0, metavar="SECONDS",
                    help="how long to wait for the answer")
    pr.add_argument("--keys", type=Path, default=None,
                    help="the board's keys (their internal ports take only them); "
                    "default: none, for a board running --no-auth")
    bench = sub.add_parser(
        "bench", formatter_class=fmt, help="load: concurrent clients against a board",
        description="Concurrent clients sending requests back to back; prints throughput "
        "and latency percentiles per client count. Against a running board it writes as "
        f"one user and into one channel, both named '{BENCH_NAME}' and reused by every "
        "run (a board's writes are permanent, so a fresh name per run would pile up in "
        "everyone's lists). --own-board measures a private board instead, which leaves "
        "nothing behind.")
    bench.add_argument("--frontend", default=None,
                       help=f"broker endpoint (default: tcp://127.0.0.1:{frontend}, or the "
                       "one of --base-port)")
    bench.add_argument("--base-port", type=_port, default=None, metavar="N", help=base_help)
    bench.add_argument("--own-board", action="store_true",
                       help="start a private 3-server board on free ports in a temporary "
                       "directory, measure it, then stop and delete it")
    bench.add_argument("--clients", type=int, nargs="+", default=[1, 16], metavar="N",
                       help="client counts to measure, one run each")
    bench.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    bench.add_argument("--service", default="publish", choices=["publish", "channels"],
                       help="request sent: a post (a write) or a channel list (a read)")
    from bbd.chaos import run as chaos

    chaos.parser(sub.add_parser("chaos", help="faults under load, then every write checked "
                                "(needs root: a network namespace per daemon)"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(_glue_negative_lists(sys.argv[1:] if argv is None else argv))

    if args.command == "up":
        from bbd import launcher

        if args.servers < 1:
            parser.error("--servers must be at least 1")
        def moved(port: int | None, name: str) -> int:
            # Like every other port, the web ones follow --base-port unless given.
            return port if port is not None else \
                args.base_port + config.port(name) - config.port("frontend")

        dashboard = moved(args.dashboard_port, "dashboard")
        metrics = moved(args.metrics_base, "metrics")
        if args.demo and not dashboard:
            parser.error("--demo needs the dashboard (--dashboard-port)")
        data = args.data.resolve()
        keys = None if args.no_auth else data / "keys"  # created by run() on first start
        layout = launcher.Layout.at_base(data, args.base_port,
                                         servers=args.servers, skews=args.clock_skews,
                                         dashboard=dashboard, metrics_base=metrics, keys=keys)
        if any(not 0 < p < 65536 for _, p in layout.web_ports()):
            parser.error(f"--base-port {args.base_port}: the dashboard and metrics ports "
                         f"{dashboard} and {metrics} are out of range; give "
                         "--dashboard-port and --metrics-base")
        if layout.frontend + layout.span() > 65536:
            parser.error(f"--base-port {args.base_port}: {args.servers} servers need ports "
                         f"up to {layout.frontend + layout.span() - 1}")
        return launcher.run(layout, args.bots, args.bot_interval, demo=args.demo)
    if args.command == "status":
        return status(args.reference or _local(args.base_port, "reference"), args.timeout,
                      args.broker or _local(args.base_port, "broker_status"), args.keys)
    if args.command == "keys":
        from bbd import auth

        made = auth.create(args.dir)
        print(f"{'created' if made else 'kept'} the board's keys in {args.dir}")
        return 0
    if args.command == "probe":
        ok, why = probe.probe(args.daemon, args.endpoint, args.ready, args.timeout,
                              args.keys)
        print(why, file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    if args.command == "bench":
        from bbd import bench as b

        if args.own_board:
            return b.on_own_board(args.clients, args.seconds, args.service)
        return b.main(args.frontend or _local(args.base_port, "frontend"), args.clients,
                      args.seconds, args.service)
    if args.command == "chaos":
        from bbd.chaos import run as chaos

        return chaos.main(args)
    return 2


def _clock_time(epoch: float) -> str:
    """Time of day (UTC) with milliseconds: what a person compares across rows."""
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%H:%M:%S.%f")[:-3]


def _broker_columns(worker: dict | None) -> tuple[str, str]:
    """What the broker thinks of a server: routing to it or why not, requests in flight."""
    if worker is None:
        return "unknown", ""
    if worker["routing"]:
        state = "routing"
    elif not worker["live"]:
        state = f"silent {worker['silent']:.1f} s"
    else:
        state = "not ready" if not worker["ready"] else "warming up"
    return state, str(worker["in_flight"])


def status(reference: str, timeout: float, broker: str | None = None,
           keys_dir: Path | None = None) -> int:
    from bbd import auth
    from bbd.client import ask_once

    keys = auth.load(keys_dir) if keys_dir is not None and keys_dir.exists() else None
    security = auth.client_options(keys)
    listing = ask_once(reference, "list", timeout=timeout, security=security)
    if listing is None:
        hint = "" if keys else f" (no keys in {keys_dir}: is the board running --no-auth?)"
        print(f"reference {reference} does not answer{hint}", file=sys.stderr)
        return 1
    view = ask_once(broker, "status", timeout=timeout) if broker else None
    workers = {w["name"]: w for w in (view or {}).get("workers", [])}
    rows = [("", "name", "rank", "ready", "coordinator", "lamport", "offset s", "last sync (UTC)",
             "applied", "broker", "in flight")]
    for entry in listing.get("list", []):
        s = ask_once(entry["sync"], "status", timeout=timeout, security=security) \
            if entry.get("sync") else None
        seen_by_broker = _broker_columns(workers.get(entry["name"]))
        if s is None:
            rows.append(("?", entry["name"], str(entry["rank"]), "no answer", "", "", "", "",
                         "", *seen_by_broker))
            continue
        mark = "*" if s.get("coordinator") == s.get("name") else ""
        last = s.get("last_sync")
        rows.append((mark, s["name"], str(s["rank"]), str(s["ready"]),
                     str(s.get("coordinator")), str(s["clock"]), f"{s['offset']:+.4f}",
                     "never" if last is None else _clock_time(last), str(s["applied"]),
                     *seen_by_broker))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    print("(* = coordinator; broker, in flight: the broker's view"
          + (")" if view else f", but the broker at {broker} does not answer)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
