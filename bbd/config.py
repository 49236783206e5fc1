"""Defaults shared by every daemon, the launcher and the tests, read from etc/bbd.toml."""

from __future__ import annotations

import os
import tomllib
from functools import cache
from pathlib import Path
from typing import Any


def config_path() -> Path:
    """BBD_CONFIG wins; otherwise etc/bbd.toml beside the package (a checkout or /app)."""
    env = os.environ.get("BBD_CONFIG")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "etc" / "bbd.toml"


@cache
def defaults() -> dict[str, Any]:
    path = config_path()
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SystemExit(f"bbd: configuration file {path} not found (set BBD_CONFIG)") from None


def port(name: str) -> int:
    return int(defaults()["ports"][name])


def timing(name: str) -> float:
    return float(defaults()["timing"][name])


def limit(name: str) -> int:
    return int(defaults()["limits"][name])
