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
