"""The board's settings, read from etc/bbd.toml: the one place their defaults live.

``Timing`` and ``Limits`` hold every interval, timeout and size the daemons use; a daemon
gets them from its ``--config FILE`` (or ``$BBD_CONFIG``, else etc/bbd.toml beside the
package) with its command-line overrides applied, and hands them, or plain values taken
from them, to the cores. No core has a default of its own that disagrees
(tests/test_config.py fails if one drifts).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration file that is missing, unreadable, or lacks or misnames a value."""


@dataclass(frozen=True)
class Timing:
    """Seconds (and one message count) that decide when the daemons act; see the comments
    in etc/bbd.toml for what each one means."""

    heartbeat_interval: float
    heartbeat_expiry: float
    request_timeout: float
    broker_heartbeat: float
    broker_liveness: float
    broker_resend_after: float
    peer_timeout: float
    anti_entropy_interval: float
    snapshot_interval: float
    reload_interval: float
    pause_check_interval: float
    reference_patience: float
    berkeley_interval: float
    berkeley_every_messages: int
    election_answer_timeout: float
    election_announce_timeout: float
    announce_interval: float
    coordinator_timeout: float
    coordinator_check_interval: float
    berkeley_min_gap: float
    berkeley_max_rtt: float
    berkeley_outlier_threshold: float

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> Timing:
        return _from_table(cls, table, "timing")

    def replace(self, **changes: Any) -> Timing:
        """A copy with some values changed (command-line overrides); unknown names and
        values that are not non-negative numbers raise ConfigError."""
        return _from_table(type(self), {**dataclasses.asdict(self), **changes}, "timing")


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int  # ZeroMQ MAXMSGSIZE on every socket that takes input

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> Limits:
        return _from_table(cls, table, "limits")


@dataclass(frozen=True)
class Settings:
    path: Path
    ports: Mapping[str, int]
    timing: Timing
    limits: Limits


def _from_table(cls: type, table: Mapping[str, Any], section: str) -> Any:
    fields = {f.name: f.type for f in dataclasses.fields(cls)}
    missing = sorted(set(fields) - set(table))
    unknown = sorted(set(table) - set(fields))
    if missing or unknown:
        raise ConfigError(f"[{section}]: " + "; ".join(
            part for part in (missing and "missing " + ", ".join(missing),
                              unknown and "unknown " + ", ".join(unknown)) if part))
    values = {}
    for name, kind in fields.items():
        value = table[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"[{section}] {name} = {value!r}: not a non-negative number")
        if kind == "int" and value != int(value):
            raise ConfigError(f"[{section}] {name} = {value!r}: not a whole number")
        values[name] = int(value) if kind == "int" else float(value)
    return cls(**values)


_selected: Path | None = None  # --config, once a daemon's options are parsed


def select(path: str | Path | None) -> None:
    """Make ``path`` this process's configuration file (a daemon's ``--config``)."""
    global _selected
    _selected = Path(path) if path is not None else None
    settings.cache_clear()


def config_path() -> Path:
    """--config wins, then $BBD_CONFIG, then etc/bbd.toml beside the package (a checkout
    or /app)."""
    if _selected is not None:
        return _selected
    env = os.environ.get("BBD_CONFIG")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "etc" / "bbd.toml"


def load(path: str | Path) -> Settings:
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"configuration file {path}: {e}") from None
    ports = raw.get("ports")
    if not isinstance(ports, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in ports.values()):
        raise ConfigError(f"configuration file {path}: [ports] must map names to numbers")
    return Settings(path, dict(ports), Timing.from_table(raw.get("timing") or {}),
                    Limits.from_table(raw.get("limits") or {}))


@cache
def settings() -> Settings:
    """This process's settings (see ``config_path``)."""
    try:
        return load(config_path())
    except ConfigError as e:
        raise SystemExit(f"bbd: {e} (give --config FILE or set BBD_CONFIG)") from None


def port(name: str) -> int:
    return int(settings().ports[name])


def timing(name: str) -> float:
    return getattr(settings().timing, name)


def limit(name: str) -> int:
    return getattr(settings().limits, name)
