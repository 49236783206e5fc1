"""The daemons' log file observer: twistd's classic text lines, formatted for less CPU.

A server writes a line per request, so the cost of a line counts. Twisted's own observer
formats each event through ``string.Formatter`` in Python and renders the time zone and
timestamp anew for every line; here a plain ``{field}`` format goes through C's
``str.format_map`` and the timestamp is rendered once a second. The text is the same,
byte for byte (``timestamp [namespace#level] text``); an event the fast path cannot
render alike (a traceback, Twisted's ``{call()}`` syntax, a bad field) goes to Twisted's
formatter as before.

twistd takes the observer from ``--logger``; ``DaemonOptions`` sets it in place of the
default one, keeping ``--logfile``, ``--nodaemon`` and SIGUSR1 rotation as twistd has them.
"""

from __future__ import annotations

import signal
import sys
from time import time
from typing import Any, TextIO

from twisted.logger import (
    ILogObserver,
    LogLevel,
    formatEventAsClassicLogText,
    formatTime,
    timeFormatRFC3339,
)
from twisted.python.threadable import isInIOThread
from zope.interface import implementer

from twisted import logger as _twisted_logger


class ClassicFormatter:
    """``formatEventAsClassicLogText``'s text for an event, cheaper for the common ones."""

    def __init__(self, time_format: str | None = timeFormatRFC3339) -> None:
        self.time_format = time_format
        self._second: int | None = None
        self._stamp = "-"

    def stamp(self, when: float | None) -> str:
        if when is None or self.time_format is None:
            return "-"
        second = int(when // 1)
        if second != self._second:
            # The format has whole seconds: one rendering serves every line of a second.
            self._stamp = formatTime(second, self.time_format)
            self._second = second
        return self._stamp

    def __call__(self, event: dict[str, Any]) -> str | None:
        fmt = event.get("log_format")
        if type(fmt) is not str or "log_failure" in event or "()" in fmt:
            return self._slow(event)
        try:
            text = fmt.format_map(event)
        except Exception:
            return self._slow(event)  # Twisted's text for an unformattable event
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"
        elif type(system) is not str:
            return self._slow(event)
        if "\n" in text:
            text = text.replace("\n", "\n\t")
        return f"{self.stamp(event.get('log_time'))} [{system}] {text}\n"

    def _slow(self, event: dict[str, Any]) -> str | None:
        return formatEventAsClassicLogText(
            event, formatTime=lambda when: self.stamp(when))


@implementer(ILogObserver)
class TextObserver:
    """Twisted's ``FileLogObserver`` (each event's text written to ``out``), flushed once
    per reactor turn instead of once per line: a turn that answers ten requests makes one
    write system call, not ten. Lines at ``warn`` and above are flushed at once (with the
    turn's lines before them), lines while the reactor is not running too, and everything
    at shutdown: a stopping or failing daemon still says why, and a SIGKILL loses at most the
    lines of the turn it cut."""

    def __init__(self, out: TextIO, formatter: Any) -> None:
        self._out = out
        self._format = formatter
        self._flush_due = False
        self._at_shutdown = False

    def __call__(self, event: dict[str, Any]) -> None:
        text = self._format(event)
        if not text:
            return
        self._out.write(text)
        if event.get("log_level") in _LOUD:
            self._out.flush()
            return
        if self._flush_due:
            return  # the turn's flush takes this line too
        from twisted.internet import reactor

        if not (reactor.running and isInIOThread()):
            self._out.flush()
            return
        if not self._at_shutdown:
            self._at_shutdown = True
            reactor.addSystemEventTrigger("after", "shutdown", self.flush)
        self._flush_due = True
        reactor.callLater(0, self.flush)

    def flush(self) -> None:
        self._flush_due = False
        self._out.flush()


_LOUD = frozenset({LogLevel.warn, LogLevel.error, LogLevel.critical})


def text_observer(out: TextIO) -> ILogObserver:
    return TextObserver(out, ClassicFormatter())


_LEVELS = frozenset(LogLevel.iterconstants())


class Logger(_twisted_logger.Logger):
    """``twisted.logger.Logger`` with the same events, for less CPU on a line per request:
    its ``emit`` checks the level against a set made once, where Twisted's sorts the
    levels anew for each event."""

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        if level not in _LEVELS:
            super().emit(level, format, **kwargs)  # Twisted's complaint about the level
            return
        kwargs.update(log_logger=self, log_level=level, log_namespace=self.namespace,
                      log_source=self.source, log_format=format, log_time=time())
        if "log_trace" in kwargs:
            kwargs["log_trace"].append((self, self.observer))  # type: ignore[attr-defined]
        self.observer(kwargs)


# twistd's options, kept by ``use_under_twistd`` for ``twistd_observer``: twistd's
# ``--logger`` names a factory it calls without arguments.
_twistd_options: dict[str, Any] = {}


def use_under_twistd(options: Any) -> None:
    """Make twistd (whose ``options`` these are, before it starts logging) log through
    ``twistd_observer``, writing where its own observer would: ``--logfile``, or stdout for
    ``-`` or ``--nodaemon`` without a file. A ``--logger`` or ``--syslog`` of the user's
    is left alone."""
    if options.get("logger") or options.get("syslog"):
        return
    _twistd_options.update(logfile=options.get("logfile"), nodaemon=options.get("nodaemon"))
    options["logger"] = f"{__name__}.twistd_observer"  # resolved by twistd's postOptions


def twistd_observer() -> ILogObserver:
    from twisted.python import logfile

    name = _twistd_options.get("logfile")
    if name == "-" or (_twistd_options.get("nodaemon") and not name):
        return text_observer(sys.stdout)
    out = logfile.LogFile.fromFullPath(name or "twistd.log")
    if not signal.getsignal(signal.SIGUSR1):  # SIGUSR1 rotates the file, as in twistd
        def rotate(signum: int, frame: Any) -> None:
            from twisted.internet import reactor

            reactor.callFromThread(out.rotate)

        signal.signal(signal.SIGUSR1, rotate)
    return text_observer(out)
