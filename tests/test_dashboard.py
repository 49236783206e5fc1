"""The dashboard in a real browser (headless Chromium) against a real 3-server cluster,
asserting what a person sees: the servers and the coordinator, a post arriving, Berkeley
bringing skewed clocks together, a killed coordinator replaced. Plus the metrics pages and
the demo mode's buttons, end to end through the launcher."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import (
    attribute,
    chromium,
    coordinators_shown,
    free_port,
    legend,
    servers_shown,
    texts,
)

from bbd.localcluster import Cluster, _free_block, wait_for

SKEWS = [-3.0, 0.0, 5.0]


@pytest.fixture(scope="module")
def board() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="bbd-dash-"))
    c = Cluster(root, skews=SKEWS)
    c.layout.dashboard = free_port()
    c.layout.metrics_base = _free_block(3)
    try:
        # The dashboard watches from before the servers start, so its offset chart holds
        # the skews as they were and Berkeley pulling them together.
        for name in ["reference", "proxy", "broker", "dashboard", *c.names()]:
            c.spawn(name)
        c.wait_up(["reference", "proxy", "broker", "dashboard", *c.names()], 60)
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def page(board: Cluster) -> Iterator[Any]:
    driver = chromium()
    try:
        driver.get(f"http://127.0.0.1:{board.layout.dashboard}/")
        yield driver
    finally:
        driver.quit()


def test_three_servers_and_one_coordinator_shown(page: Any) -> None:
    shown = wait_for(lambda: (s := servers_shown(page)) and len(s) == 3
                     and all(v["state"] == "up" for v in s.values())
                     and len(coordinators_shown(page)) == 1 and s, 20,
                     "three servers up and one coordinator on the page")
    assert sorted(shown) == ["servidor-1", "servidor-2", "servidor-3"]
    wait_for(lambda: attribute(page, "#infra .node", "data-state") == ["up"] * 3, 10,
             "reference, broker and proxy shown up")


def test_a_post_through_the_broker_appears_on_the_page(board: Cluster, page: Any) -> None:
    c = board.client()
    c.request("login", {"user": "ana"})
    c.request("channel", {"channel": "painel"})
    text = f"ola do teste {time.time():.3f}"
    reply = c.request("publish", {"user": "ana", "channel": "painel", "message": text})
    assert reply["status"] == "OK"
    c.request("message", {"src": "ana", "dst": "ana", "message": "privado e secreto"})

    wait_for(lambda: any(text in t for t in texts(page, '.channel[data-channel="painel"] li')),
             5, "the post on the page")
    wait_for(lambda: texts(page, "#private-count") == ["1"], 5, "the private message counted")
    assert "privado e secreto" not in texts(page, "body")[0]


def test_server_and_dashboard_metrics_pages(board: Cluster) -> None:
    # A write of our own: the broker routes it to whichever server is ready, so look for
    # it on every server's page.
    c = board.client()
    c.request("login", {"user": "metricas"})
    base = board.layout.metrics_base
    pages = {f"servidor-{i + 1}": urllib.request.urlopen(
        f"http://127.0.0.1:{base + i}/metrics", timeout=5).read().decode() for i in range(3)}
    for name, text in pages.items():
        assert re.search(rf'bbd_lamport_clock\{{server="{name}"\}} \d', text), name
        assert "bbd_journal_bytes" in text
    served = [text for text in pages.values()
              if re.search(r'bbd_requests_total\{service="login",status="sucesso"\} [1-9]', text)]
    assert served, "no server counts the login"
    assert 'bbd_write_latency_seconds_bucket{le="0.005",service=' in served[0]
    dash = urllib.request.urlopen(f"http://127.0.0.1:{board.layout.dashboard}/metrics",
                                  timeout=5).read().decode()
    assert 'bbd_replication_lag_operations{server="servidor-2"}' in dash


def test_skewed_clocks_come_together_on_the_offset_chart(page: Any) -> None:
    def last_offsets() -> dict[str, float]:
        return legend(page, "offset")

    # The chart starts apart (the skews are seconds apart)...
    first = wait_for(lambda: (o := last_offsets()) and len(o) == 3 and o, 10, "three lines")
    series = page.execute_script("return window.dashboard.series.offset")
    starts = [pts[0][1] for pts in series.values()]
    assert max(starts) - min(starts) > 1.0, (first, starts)

    # ... and its lines end within 1 ms of each other once Berkeley has slewed them.
    def together() -> dict[str, float] | None:
        o = last_offsets()
        return o if len(o) == 3 and max(o.values()) - min(o.values()) < 0.001 else None

    ends = wait_for(together, 45, "the offset lines to end within 1 ms", interval=0.25)
    assert max(ends.values()) - min(ends.values()) < 0.001


def test_killed_coordinator_replaced_and_shown_down_within_3_s(board: Cluster,
                                                                page: Any) -> None:
    (old,) = wait_for(lambda: coordinators_shown(page), 10, "a coordinator")
    board.kill(old)
    killed = time.monotonic()

    def replaced() -> list[str] | None:
        shown = servers_shown(page)
        new = coordinators_shown(page)
        ok = shown.get(old, {}).get("state") == "down" and len(new) == 1 and new[0] != old
        return new if ok else None

    new = wait_for(replaced, 3, "a different coordinator marked and the dead one down",
                   interval=0.05)
    took = time.monotonic() - killed
    print(f"coordinator {old} killed; {new[0]} marked and {old} shown down after {took:.2f} s")
    assert took < 3
    events = texts(page, "#timeline")[0]
    assert f"coordinator is now {new[0]}" in events and f"{old} stopped answering" in events


# -- demo mode, through the launcher (bbd up --demo), on free ports -----------------------

LAUNCH = """
import sys
from pathlib import Path
from bbd import launcher
ports = [int(p) for p in sys.argv[2:]]
layout = launcher.Layout(Path(sys.argv[1]), servers=3, frontend=ports[0], backend=ports[1],
                         xsub=ports[2], xpub=ports[3], reference=ports[4],
                         server_base=ports[5], dashboard=ports[6], broker_status=ports[7])
sys.exit(launcher.run(layout, 0, 3.0, demo=True))
"""


def test_demo_buttons_kill_and_restart_a_server(tmp_path: Path) -> None:
    base = _free_block(13)
    ports = [base + i for i in range(5)] + [base + 5, base + 11, base + 12]
    out = (tmp_path / "launcher.out").open("wb")
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(tmp_path / "run"),
                             *map(str, ports)], stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    driver = None
    try:
        url = f"http://127.0.0.1:{ports[6]}/"
        wait_for(lambda: _get_json(url + "api/demo").get("demo"), 60, "the demo dashboard")
        driver = chromium()
        driver.get(url)
        wait_for(lambda: len([s for s in servers_shown(driver).values()
                              if s["state"] == "up"]) == 3, 60, "three servers up")
        card = '#servers [data-server="servidor-2"]'
        driver.find_element("css selector", f'{card} button[data-action="kill"]').click()
        wait_for(lambda: servers_shown(driver)["servidor-2"]["state"] == "down", 5,
                 "servidor-2 shown down after the kill button")
        time.sleep(1.5)  # the monitor would have restarted it by now: it must stay down
        assert servers_shown(driver)["servidor-2"]["state"] == "down"
        driver.find_element("css selector", f'{card} button[data-action="restart"]').click()
        wait_for(lambda: servers_shown(driver)["servidor-2"]["state"] == "up", 60,
                 "servidor-2 up again after the restart button")
        assert "restart servidor-2: started again" in texts(driver, "#timeline")[0]
    finally:
        if driver is not None:
            driver.quit()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _get_json(url: str) -> dict:
    try:
        return json.load(urllib.request.urlopen(url, timeout=1))
    except OSError:
        return {}
