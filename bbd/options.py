"""Command-line options shared by the twistd plugins; defaults come from the configuration
file (``--config FILE``, else ``$BBD_CONFIG``, else etc/bbd.toml), read once the command
line is parsed, so that ``--config`` decides the defaults of every other option."""

from __future__ import annotations

from typing import Any

from twisted.python import usage

from bbd import config


class PortDefault(str):
    """An endpoint default whose port is the configuration's ``port_name``: shown as such
    in ``--help``, filled in by ``postOptions``."""

    host: str
    port_name: str

    def __new__(cls, host: str, port_name: str) -> PortDefault:
        self = str.__new__(cls, f"tcp://{host}:<{port_name} port>")
        self.host, self.port_name = host, port_name
        return self

    def resolve(self, ports: Any) -> str:
        return f"tcp://{self.host}:{ports[self.port_name]}"


def tcp_any(port_name: str) -> PortDefault:
    return PortDefault("*", port_name)


def tcp_local(port_name: str) -> PortDefault:
    return PortDefault("127.0.0.1", port_name)


class DaemonOptions(usage.Options):
    optParameters: list = [
        ["config", None, None, "configuration file (default: $BBD_CONFIG, else etc/bbd.toml)"],
        ["max-bytes", None, None, "largest frame accepted (ZeroMQ MAXMSGSIZE; default: "
         "[limits] max_message_bytes)", int],
    ]
    # Plain port options (not endpoints) whose default is a port of the configuration.
    config_ports: dict[str, str] = {}

    def __init__(self) -> None:
        super().__init__()
        self["timing-overrides"] = {}

    def opt_timing(self, value: str) -> None:
        """NAME=SECONDS: override one [timing] value of the configuration (repeatable)"""
        name, sep, number = value.partition("=")
        try:
            seconds = float(number)
        except ValueError:
            seconds = None
        if not sep or seconds is None:
            raise usage.UsageError(f"--timing {value}: not NAME=SECONDS")
        self["timing-overrides"][name.strip()] = seconds

    def postOptions(self) -> None:
        path = self["config"] or config.config_path()
        try:
            settings = config.load(path)
            timing = settings.timing.replace(**self["timing-overrides"])
        except config.ConfigError as e:
            raise usage.UsageError(str(e)) from None
        if self["config"]:
            config.select(path)  # anything else in this process reads the same file
        self["settings"], self["timing"] = settings, timing
        for key, value in list(self.items()):
            if isinstance(value, PortDefault):
                self[key] = value.resolve(settings.ports)
        for key, port_name in self.config_ports.items():
            if self[key] is None:
                self[key] = settings.ports[port_name]
        if self["max-bytes"] is None:
            self["max-bytes"] = settings.limits.max_message_bytes
        if self["max-bytes"] < 1024:
            raise usage.UsageError("--max-bytes must be at least 1024")
        for key, value in self.items():
            if isinstance(value, str) and value.startswith("tcp://") and value.endswith(":"):
                raise usage.UsageError(f"--{key}: endpoint {value!r} has no port")
        self._cheaper_log_lines()

    def _cheaper_log_lines(self) -> None:
        """Under twistd (our parent's options), log through ``bbd.logs``: the same lines as
        twistd's observer for a fraction of the CPU. Set before twistd starts logging."""
        parent = getattr(self, "parent", None)
        if parent is None or "logger" not in parent or "logfile" not in parent:
            return
        from bbd import logs

        logs.use_under_twistd(parent)


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
