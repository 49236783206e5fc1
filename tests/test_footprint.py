"""The /proc parsing behind ``python -m bbd.footprint`` (the resource numbers of
deploy/kubernetes), on fixed text and on this very process."""

from __future__ import annotations

import os

from bbd.footprint import Sample, millicores, parse_cpu, parse_status, sample

STATUS = "Name:\tpython\nVmHWM:\t   52340 kB\nVmRSS:\t   41200 kB\nThreads:\t3\n"
# The command name may hold spaces and parentheses: fields are counted after the last ')'.
STAT = "4242 (twistd (a) b) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 3 0"


def test_parse_status_reads_rss_and_peak() -> None:
    assert parse_status(STATUS) == (41200, 52340)


def test_parse_cpu_adds_user_and_system_time() -> None:
    assert parse_cpu(STAT, 100) == 3.0


def test_millicores_is_cpu_seconds_per_second() -> None:
    assert millicores(Sample(1, 1, 2.0), Sample(1, 1, 2.5), 2.0) == 250.0


def test_sample_of_this_process() -> None:
    s = sample(os.getpid())
    assert 0 < s.rss_kib <= s.peak_kib and s.cpu_s > 0
