"""Command-line options shared by the twistd plugins; defaults come from etc/bbd.toml."""

from __future__ import annotations

from twisted.python import usage

from bbd import config


def tcp_any(port_name: str) -> str:
    return f"tcp://*:{config.port(port_name)}"


def tcp_local(port_name: str) -> str:
    return f"tcp://127.0.0.1:{config.port(port_name)}"


class DaemonOptions(usage.Options):
    optParameters: list = [
        ["max-bytes", None, None, "largest frame accepted (ZeroMQ MAXMSGSIZE)", int],
    ]

    def postOptions(self) -> None:
        if self["max-bytes"] is None:
            self["max-bytes"] = config.limit("max_message_bytes")
        if self["max-bytes"] < 1024:
            raise usage.UsageError("--max-bytes must be at least 1024")
        for key, value in self.items():
            if isinstance(value, str) and value.startswith("tcp://") and value.endswith(":"):
                raise usage.UsageError(f"--{key}: endpoint {value!r} has no port")


class SecureDaemonOptions(DaemonOptions):
    """A daemon with internal ports: ``--keys DIR`` (CURVE, the board's keys) or ``--no-auth``
    (classroom mode: anyone who reaches the ports is believed, within the board's checks).
    One of the two is required, so a board never runs open by omission."""

    optFlags: list = [["no-auth", None, "run without authentication (classroom mode)"]]
    optParameters = DaemonOptions.optParameters + [
        ["keys", None, None, "directory with the board's CURVE keys (bbd keys DIR makes them)"],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        from bbd import auth

        if self["no-auth"] == bool(self["keys"]):
            raise usage.UsageError("give either --keys DIR (the board's keys) or --no-auth")
        try:
            self["auth"] = auth.load(self["keys"]) if self["keys"] else None
        except auth.KeysError as e:
            raise usage.UsageError(str(e)) from None
