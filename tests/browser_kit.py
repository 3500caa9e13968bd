"""Headless Debian chromium for the browser tests (the MLflow, Dagster and Label Studio pages).

    def test_page(chromium):          # the fixture in tests/conftest.py
        chromium.get("http://127.0.0.1:PORT/")

The browser is the one ``pipelines/labelstudio_browser.py`` drives: headless, sandbox off (root
in CI), every host but 127.0.0.1 unresolvable. Where chromium, its driver or selenium is missing
the test skips and names the command that installs them (``bash scripts/install_browser.sh``,
which ``scripts/run.sh test`` runs), except under ``TANDEM_REQUIRE_BROWSER=1`` (set by
``scripts/run.sh test`` as root, as in CI), where it fails: CI must not skip them quietly.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def missing(reason: str):
    """Skip, except where the browser tests must run (``TANDEM_REQUIRE_BROWSER``, which
    ``scripts/run.sh test`` sets as root, as in CI): there a missing browser fails."""
    if os.environ.get("TANDEM_REQUIRE_BROWSER"):
        pytest.fail(f"{reason}; TANDEM_REQUIRE_BROWSER is set, so the browser tests must run", pytrace=False)
    pytest.skip(reason)


def start_chromium():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        missing("Debian's chromium and chromium-driver are not installed (as root: bash scripts/install_browser.sh)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing("selenium is not installed (pip install -e '.[dev]')")
    from pipelines.labelstudio_browser import browser

    return browser()


def wait_for_text(driver, text: str, timeout: float = 60) -> str:
    """The page's visible text once it contains ``text`` (single-page apps render late)."""
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        try:
            body = driver.find_element("tag name", "body").text
        except Exception:  # the page is still loading
            body = ""
        if text in body:
            return body
        time.sleep(0.5)
    raise AssertionError(f"{text!r} never appeared on {driver.current_url}; the page said:\n{body[:2000]}")


def wait_for_port(port: int, timeout: float = 90, process=None) -> None:
    """Until something accepts connections on 127.0.0.1:``port`` (a server starting up);
    fails early when ``process`` (that server) exits."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the server exited ({process.returncode}) before listening on port {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"nothing listened on 127.0.0.1:{port} after {timeout:.0f} s")


def start_server(cmd: list[str], **kwargs):
    """A web server in a process group of its own, so ``stop_server`` ends its workers too."""
    import subprocess

    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, **kwargs)


def stop_server(server) -> None:
    """SIGTERM to the server's group; SIGKILL when it outlasts 30 s (a loaded machine)."""
    import os
    import signal
    import subprocess

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(30)
            return
        except subprocess.TimeoutExpired:
            continue
