"""The ``bbd`` command: ``up`` (run the board locally), ``status``, ``bench``."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from bbd import config


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bbd", description="BulletInBoard tools")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start reference, proxy, broker, servers (and bots)")
    up.add_argument("--servers", type=int, default=3)
    up.add_argument("--bots", type=int, default=0)
    up.add_argument("--bot-interval", type=float, default=3.0)
    up.add_argument("--data", type=Path, default=Path("run"),
                    help="directory for each daemon's pid, log and data (default: run)")
    up.add_argument("--clock-skews", type=_floats, default=[],
                    help="per-server physical clock skew in seconds, e.g. -3,0,5")
    up.add_argument("--no-auth", action="store_true",
                    help="classroom mode: internal ports open to anyone (see README)")
    st = sub.add_parser("status", help="one row per live server")
    st.add_argument("--reference", default=f"tcp://127.0.0.1:{config.port('reference')}")
    st.add_argument("--timeout", type=float, default=1.0)
    st.add_argument("--keys", type=Path, default=Path("run") / "keys",
                    help="the board's keys (default: run/keys; without them, no auth)")
    keys = sub.add_parser("keys", help="create the board's CURVE keys in DIR if missing")
    keys.add_argument("dir", type=Path)
    bench = sub.add_parser("bench", help="load: concurrent clients against the broker")
    bench.add_argument("--frontend", default=f"tcp://127.0.0.1:{config.port('frontend')}")
    bench.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    bench.add_argument("--seconds", type=float, default=5.0)
    bench.add_argument("--service", default="publish", choices=["publish", "channels"])
    args = parser.parse_args(_glue_negative_lists(sys.argv[1:] if argv is None else argv))

    if args.command == "up":
        from bbd import launcher

        if args.servers < 1:
            parser.error("--servers must be at least 1")
        from bbd import auth

        data = args.data.resolve()
        keys = None if args.no_auth else data / "keys"
        if keys is not None and auth.create(keys):
            print(f"created the board's keys in {keys} (owner only)")
        layout = launcher.Layout(data, servers=args.servers, skews=args.clock_skews, keys=keys)
        return launcher.run(layout, args.bots, args.bot_interval)
    if args.command == "keys":
        from bbd import auth

        made = auth.create(args.dir)
        print(f"{'created' if made else 'kept'} the board's keys in {args.dir}")
        return 0
    if args.command == "status":
        return status(args.reference, args.timeout, args.keys)
    if args.command == "bench":
        from bbd import bench as b

        for n in args.clients:
            print(b.line(b.run(args.frontend, n, args.seconds, args.service)), flush=True)
        return 0
    return 2


def _clock_time(epoch: float) -> str:
    """Time of day (UTC) with milliseconds: what a person compares across rows."""
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%H:%M:%S.%f")[:-3]


def status(reference: str, timeout: float, keys_dir: Path | None = None) -> int:
    from bbd import auth
    from bbd.client import ask_once

    keys = auth.load(keys_dir) if keys_dir is not None and keys_dir.exists() else None
    security = auth.client_options(keys)
    listing = ask_once(reference, "list", timeout=timeout, security=security)
    if listing is None:
        hint = "" if keys else f" (no keys in {keys_dir}: is the board running --no-auth?)"
        print(f"reference {reference} does not answer{hint}", file=sys.stderr)
        return 1
    rows = [("", "name", "rank", "ready", "coordinator", "lamport", "offset s", "last sync (UTC)",
             "applied")]
    for entry in listing.get("list", []):
        s = ask_once(entry["sync"], "status", timeout=timeout, security=security) \
            if entry.get("sync") else None
        if s is None:
            rows.append(("?", entry["name"], str(entry["rank"]), "no answer", "", "", "", "",
                         ""))
            continue
        mark = "*" if s.get("coordinator") == s.get("name") else ""
        last = s.get("last_sync")
        rows.append((mark, s["name"], str(s["rank"]), str(s["ready"]),
                     str(s.get("coordinator")), str(s["clock"]), f"{s['offset']:+.4f}",
                     "never" if last is None else _clock_time(last), str(s["applied"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    print("(* = coordinator)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
