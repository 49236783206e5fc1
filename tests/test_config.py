"""etc/bbd.toml is the one place defaults live: a value changed in a configuration file (or
on the command line) reaches the cores, and no core keeps a default that disagrees."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
from twisted.application import internet
from twisted.python import usage

from bbd import config
from bbd.berkeley import compute_round
from bbd.election import Bully
from bbd.loadbalance import Settings

DEFAULTS = config.load(Path(__file__).resolve().parent.parent / "etc" / "bbd.toml")


def keyword_defaults(fn: Any) -> dict[str, Any]:
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_timing_and_limits_hold_every_value_of_the_file() -> None:
    import tomllib

    raw = tomllib.loads((DEFAULTS.path).read_text())
    assert set(raw["timing"]) == {f.name for f in dataclasses.fields(config.Timing)}
    assert set(raw["limits"]) == {f.name for f in dataclasses.fields(config.Limits)}


def test_defaults_in_code_equal_etc_bbd_toml() -> None:
    t = DEFAULTS.timing
    assert keyword_defaults(Bully) == {
        "peers": None, "answer_timeout": t.election_answer_timeout,
        "announce_timeout": t.election_announce_timeout,
        "announce_interval": t.announce_interval,
        "coordinator_timeout": t.coordinator_timeout}
    assert keyword_defaults(compute_round) == {
        "max_rtt": t.berkeley_max_rtt, "outlier_threshold": t.berkeley_outlier_threshold}
    s = Settings()
    assert (s.heartbeat, s.liveness, s.resend_after) == (
        t.broker_heartbeat, t.broker_liveness, t.broker_resend_after)
    # The server's configuration keeps no timing of its own: one Timing, no defaults.
    from bbd.services.server import ServerConfig

    fields = {f.name: f for f in dataclasses.fields(ServerConfig)}
    assert fields["timing"].default is dataclasses.MISSING
    assert not set(fields) & {f.name for f in dataclasses.fields(config.Timing)}


def test_a_file_missing_or_misnaming_a_value_is_refused(tmp_path: Path) -> None:
    text = DEFAULTS.path.read_text()
    for broken, why in [
        (text.replace("peer_timeout = ", "peer_timeot = "), "missing peer_timeout"),
        (text.replace("heartbeat_interval = 0.5", "heartbeat_interval = -1"), "non-negative"),
    ]:
        path = tmp_path / "bbd.toml"
        path.write_text(broken)
        with pytest.raises(config.ConfigError, match=why):
            config.load(path)
    with pytest.raises(config.ConfigError, match="unknown nap"):
        DEFAULTS.timing.replace(nap=1.0)


def changed_file(tmp_path: Path, **timing: float) -> Path:
    text = DEFAULTS.path.read_text()
    for name, value in timing.items():
        old = f"{name} = {getattr(DEFAULTS.timing, name)}"
        assert old in text
        text = text.replace(old, f"{name} = {value}")
    text = text.replace("sync = 5561", "sync = 7761").replace("xpub = 5558", "xpub = 7758")
    path = tmp_path / "other.toml"
    path.write_text(text)
    return path


def test_a_value_changed_in_a_config_file_reaches_the_server_cores(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bbd.services import server

    monkeypatch.setattr(config, "_selected", None)
    path = changed_file(tmp_path, election_answer_timeout=0.9, heartbeat_interval=0.3)
    options = server.Options()
    options.parseOptions(["--config", str(path), "--no-auth", "--name", "s1",
                          "--data", str(tmp_path / "d"), "--timing", "peer_timeout=0.7",
                          "--timing", "berkeley_every_messages=4"])
    assert options["sync-port"] == 7761 and options["subscribe"].endswith(":7758")
    top = server.makeService(options)
    group = top.getServiceNamed("server")
    board_server = group.getServiceNamed("write path")
    coordination = group.getServiceNamed("coordination")
    assert board_server.cfg.timing.peer_timeout == 0.7
    assert board_server.cfg.timing.berkeley_every_messages == 4
    steps = [s.step for s in group.services if isinstance(s, internet.TimerService)]
    assert 0.3 in steps  # the heartbeat timer
    # The election machine the coordination builds takes the file's timeout.
    coordination.running = True
    board_server.registration.rank = 1
    board_server.catchup.finished()  # caught up: the election may start
    monkeypatch.setattr(coordination, "_run", lambda actions: None)
    coordination._activate()
    assert coordination.bully.answer_timeout == 0.9
    config.select(None)


@pytest.mark.parametrize("plugin,option,expect", [
    ("bbd.services.broker", "frontend", "tcp://*:5555"),
    ("bbd.services.proxy", "xpub", "tcp://*:7758"),
    ("bbd.services.reference", "listen", "tcp://*:5559"),
    ("bbd.services.dashboard", "subscribe", "tcp://127.0.0.1:7758"),
    ("bbd.services.server", "sync-port", 7761),
])
def test_every_daemon_takes_config_and_timing_overrides(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plugin: str, option: str,
        expect: Any) -> None:
    monkeypatch.setattr(config, "_selected", None)
    path = changed_file(tmp_path)
    options = importlib.import_module(plugin).Options()
    options.parseOptions(["--config", str(path), "--no-auth",
                          "--timing", "heartbeat_expiry=7.5"])
    assert options[option] == expect
    assert options["timing"].heartbeat_expiry == 7.5
    assert options["max-bytes"] == DEFAULTS.limits.max_message_bytes
    config.select(None)
    with pytest.raises(usage.UsageError, match="unknown nap"):
        importlib.import_module(plugin).Options().parseOptions(
            ["--no-auth", "--timing", "nap=1"])


def test_the_reference_expiry_follows_the_timing() -> None:
    from bbd.services.reference import Options

    options = Options()
    options.parseOptions(["--no-auth", "--timing", "heartbeat_expiry=9"])
    assert options["expiry"] == 9.0
