"""bbd.logs: twistd's classic log lines, byte for byte, from a cheaper formatter."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.logger import Logger, LogLevel, LogPublisher, formatEventAsClassicLogText
from twisted.python.failure import Failure

from bbd import logs

NOW = time.time()


def _event(**fields) -> dict:
    return {"log_time": NOW, "log_namespace": "bbd.services.server",
            "log_level": LogLevel.info, **fields}


def _failure() -> Failure:
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        return Failure()


@pytest.mark.parametrize("event", [
    _event(log_format="{service} {subject} clock={clock} op={op}{retry} -> {result}",
           service="publish", subject="alice -> #general", clock=7, op="s1:3", retry="",
           result="ok"),
    _event(log_format="gap {gap:.1f} s, {n:>5d} ops", gap=1.23456, n=12),
    _event(log_format="{who!r} said {what[0]}", who="bob", what=["hi"]),
    _event(log_format="two\nlines: {x}", x="and\nmore"),
    _event(log_format="plain text, no fields"),
    _event(log_format="from the legacy log", log_system="-"),
    _event(log_format="{missing} field"),  # unformattable: Twisted's own text
    _event(log_format="{value()} by call", value=lambda: 42),  # Twisted's call syntax
    _event(log_format="error serving {service}", service="publish", log_failure=_failure()),
    _event(log_format="no time", log_time=None),
    {"log_format": "nothing else"},
    {"message": ("legacy, no format",)},
])
def test_lines_are_twisteds_classic_text(event: dict) -> None:
    assert logs.ClassicFormatter()(event) == formatEventAsClassicLogText(event)


def test_the_timestamp_follows_the_clock_across_seconds() -> None:
    fmt = logs.ClassicFormatter()
    for when in (NOW, NOW + 0.4, NOW + 1.0, NOW + 3600.7, NOW - 86400):
        event = _event(log_format="x", log_time=when)
        assert fmt(event) == formatEventAsClassicLogText(event)


def test_an_observer_writes_each_line_as_it_comes() -> None:
    out = io.StringIO()
    log = Logger(namespace="bbd.test", observer=LogPublisher(logs.text_observer(out)))
    log.info("publish {subject} -> {result}", subject="a -> #b", result="ok")
    log.warn("second")
    lines = out.getvalue().splitlines()
    assert lines[0].endswith(" [bbd.test#info] publish a -> #b -> ok")
    assert lines[1].endswith(" [bbd.test#warn] second")


def test_twistd_logs_through_it_to_its_logfile(tmp_path: Path) -> None:
    from twisted.scripts._twistd_unix import ServerOptions

    logfile = tmp_path / "twistd.log"
    options = ServerOptions()
    options.parseOptions(["-n", "--logfile", str(logfile), "--pidfile", "",
                          "bbd-proxy", "--no-auth"])
    assert options["logger"] is logs.twistd_observer
    observer = options["logger"]()
    Logger(namespace="bbd.test", observer=LogPublisher(observer)).info("hello {x}", x=1)
    assert logfile.read_text().endswith(" [bbd.test#info] hello 1\n")


def test_a_logger_of_the_users_choice_is_kept() -> None:
    from twisted.scripts._twistd_unix import ServerOptions

    options = ServerOptions()
    options.parseOptions(["-n", "--logger", "twisted.logger.textFileLogObserver",
                          "bbd-proxy", "--no-auth"])
    assert options["logger"] is not logs.twistd_observer


class _Out(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushed = ""

    def flush(self) -> None:
        self.flushed = self.getvalue()


@pytest_twisted.inlineCallbacks
def test_lines_reach_the_file_once_a_turn_and_warnings_at_once() -> None:
    from twisted.internet import reactor, task

    out = _Out()
    log = Logger(namespace="bbd.test", observer=LogPublisher(logs.text_observer(out)))
    log.info("first")
    log.info("second")
    assert out.flushed == ""  # written, not yet flushed: the turn goes on
    yield task.deferLater(reactor, 0, lambda: None)
    assert out.flushed.count("\n") == 2  # one flush for both, after the turn
    log.info("third")
    log.warn("trouble")  # a warning goes out at once, with what came before it
    assert out.flushed.endswith("[bbd.test#warn] trouble\n") and "third" in out.flushed
