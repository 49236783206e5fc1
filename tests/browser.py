"""Headless Chromium (Debian's chromium + chromium-driver, from `make install`) for the
dashboard's tests, driven with Selenium. Nothing is downloaded: the driver and the browser
are the system's."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser")
DRIVER = ("/usr/bin/chromedriver", "chromedriver")


def _find(candidates: tuple[str, ...], what: str) -> str:
    for c in candidates:
        found = c if Path(c).exists() else shutil.which(c)
        if found:
            return found
    raise AssertionError(f"{what} not found: `make install` installs chromium and "
                         "chromium-driver (Debian packages)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium(width: int = 1400, height: int = 1500) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _find(CHROMIUM, "chromium")
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-extensions",
                "--disable-component-update", "--disable-default-apps", "--no-first-run",
                "--disable-sync", "--metrics-recording-only", "--mute-audio",
                f"--window-size={width},{height}"]:
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(_find(DRIVER, "chromedriver")))


# The page re-renders its panels on every update: read the DOM in one script, so no
# element goes stale between finding it and reading it.
SERVERS_JS = """
return [...document.querySelectorAll('#servers .node.server')].map(n => ({
  name: n.dataset.server, state: n.dataset.state, coordinator: n.dataset.coordinator,
  crown: getComputedStyle(n.querySelector('.crown')).display !== 'none'}));
"""


def servers_shown(driver: Any) -> dict[str, dict[str, Any]]:
    """What the topology panel shows of each server: state, coordinator mark (visible)."""
    return {s["name"]: s for s in driver.execute_script(SERVERS_JS)}


def coordinators_shown(driver: Any) -> list[str]:
    return [n for n, s in servers_shown(driver).items() if s["crown"]]


def attribute(driver: Any, selector: str, name: str) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.getAttribute("
        "arguments[1]))", selector, name)


def texts(driver: Any, selector: str) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText)", selector)


def legend(driver: Any, chart: str) -> dict[str, float]:
    """The last value of each line of a chart, as its legend shows it."""
    pairs = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => [e.dataset.server, "
        "e.dataset.last])", f"#legend-{chart} li[data-server]")
    return {name: float(last) if last else float("nan") for name, last in pairs}
