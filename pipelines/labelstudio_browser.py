"""Label Studio's labeling page driven the way an annotator uses it: clicks, keys, Submit, Skip.

    from pipelines.labelstudio_browser import Annotator, browser
    page = Annotator(browser(), "http://127.0.0.1:PORT")
    page.login(username, password)
    page.open(project)                 # "Label All Tasks": the annotator's stream, Skip included
    a, b = page.shown_clips()          # the sample ids of the clips on screen, A then B
    page.choose("Visual quality", "Tie"); page.pick("B"); page.submit()

Every action goes through the page's own controls: the radio labels of a ``Choices`` axis, the
"Choose A / Choose B" captions of the ``Pairwise`` tag, the ``Ranker``'s drag handles (by
keyboard: react-beautiful-dnd's Space, arrows, Space), and the Submit / Skip buttons.
It needs Debian's ``chromium`` and ``chromium-driver`` and selenium (tandem's dev extra, and
Label Studio's venv). The browser resolves no host but 127.0.0.1.

As a script it checks that a task's clips play with sound, from Label Studio's venv:

    LABEL_STUDIO_URL=http://127.0.0.1:PORT LABEL_STUDIO_USERNAME=... LABEL_STUDIO_PASSWORD=... \\
        ~/.cache/tandem/label-studio-1.23.2/bin/python pipelines/labelstudio_browser.py PROJECT TASK

It prints one JSON line with the ``<video>`` elements' state (``BROWSER_SCREENSHOT=file.png``
also saves the page). Like labelstudio_ops.py it imports nothing from tandem.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import PurePosixPath
from urllib.parse import parse_qs, urlparse


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1920,1200",
                "--autoplay-policy=no-user-gesture-required", "--mute-audio",
                '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1'):
        options.add_argument(arg)
    options.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def wait_for(fn, timeout: float = 60, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Exception:  # the page is still rendering
            pass
        time.sleep(0.25)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}")


VIDEO_STATE = """
return Array.from(document.querySelectorAll('video')).map(v => ({
  src: v.currentSrc || v.getAttribute('src'), controls: v.controls, muted: v.muted, duration: v.duration,
  readyState: v.readyState, audioBytes: v.webkitAudioDecodedByteCount}));
"""
# the Ranker boards of the page, one per ranked axis, in page order
BOARDS = """
const boards = Array.from(document.querySelectorAll('.htx-ranker-column')).reduce((acc, col) => {
  if (!acc.includes(col.parentElement)) acc.push(col.parentElement); return acc; }, []);
"""
# the API as the logged-in page sees it (its session cookie): what a click has saved
FETCH_JSON = """
const done = arguments[arguments.length - 1];
fetch(arguments[0], {credentials: 'same-origin'}).then(r => r.json()).then(done, e => done({error: String(e)}));
"""


def sample_id(src: str) -> str:
    """The clip's sample id from its URL (``/data/local-files/?d=.../samples/ID.mp4`` or ``.../ID.mp4``)."""
    path = parse_qs(urlparse(src).query).get("d", [urlparse(src).path])[0]
    return PurePosixPath(path).stem


def gone(element) -> bool:
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        return not element.is_displayed()
    except StaleElementReferenceException:  # removed from the page
        return True


class Annotator:
    """One annotator's browser on one Label Studio (see the module docstring)."""

    def __init__(self, driver, url: str):
        self.driver, self.url = driver, url.rstrip("/")

    def find(self, xpath: str, what: str, timeout: float = 60):
        from selenium.webdriver.common.by import By

        return wait_for(lambda: self.driver.find_element(By.XPATH, xpath), timeout, what)

    def click(self, element) -> None:
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        element.click()

    def login(self, username: str, password: str) -> None:
        self.driver.get(f"{self.url}/user/login/")
        self.find("//input[@name='email']", "the login form").send_keys(username)
        self.find("//input[@name='password']", "the password field").send_keys(password)
        self.click(self.find("//button[@type='submit'] | //input[@type='submit']", "the login button"))
        wait_for(lambda: "/user/login" not in self.driver.current_url, what="the login")

    def open(self, project: int, task: int | None = None) -> None:
        """The labeling page of ``task``, or the project's stream ("Label All Tasks", with Skip)."""
        query = f"task={task}" if task is not None else "labeling=1"
        self.driver.get(f"{self.url}/projects/{project}/data?{query}")
        self.submit_button()

    def submit_button(self):
        return self.find("//button[normalize-space()='Submit']", "the Submit button")

    def shown_clips(self, count: int = 2) -> list[str]:
        """Sample ids of the clips on the page, in page order, once ``count`` are there."""
        videos = wait_for(lambda: (lambda v: v if len(v) >= count else None)(self.driver.execute_script(VIDEO_STATE)),
                          what=f"{count} clips on the page")
        return [sample_id(v["src"]) for v in videos]

    def play_all(self, timeout: float = 60) -> list[dict]:
        """Plays every clip; their state once each has decoded some audio."""
        self.driver.execute_script("document.querySelectorAll('video').forEach(v => v.play())")
        state = wait_for(lambda: (lambda s: s if s and all(v["audioBytes"] > 0 for v in s) else None)(
            self.driver.execute_script(VIDEO_STATE)), timeout, "every clip's audio to decode")
        self.driver.execute_script("document.querySelectorAll('video').forEach(v => v.pause())")
        return state

    def choose(self, axis_title: str, value: str) -> None:
        """Clicks the radio ``value`` ("A better", "B better", "Tie") under the axis header."""
        radio = (f"//h4[normalize-space()='{axis_title}']/following-sibling::div[contains(@class, 'lsf-choices')][1]"
                 f"//input[@name='{value}']")
        self.click(self.find(radio + "/ancestor::label[1]", f"the {value!r} choice of {axis_title}"))
        # the page re-renders the choices on a click: look the radio up again
        wait_for(lambda: self.find(radio, "the radio", 5).is_selected(), 10, f"{value!r} of {axis_title} to be checked")

    def pick(self, side: str) -> None:
        """The Pairwise tag: clicks the caption under clip ``side`` ("A" or "B")."""
        self.click(self.find(f"//div[contains(@class, 'tandem-choose') and normalize-space()='Choose {side}']",
                             f"the 'Choose {side}' caption"))

    def picked(self) -> str | None:
        """Which clip's panel carries the Pairwise tag's selection style (its outline), if any."""
        sides = self.driver.execute_script("""
            return Array.from(document.querySelectorAll('.tandem-choose')).map(c => {
              let e = c; while (e && !(e.style && e.style.outlineStyle)) e = e.parentElement;
              return e ? c.textContent.trim().slice(-1) : null; });""")
        chosen = [s for s in sides if s]
        return chosen[0] if len(chosen) == 1 else None

    def rank(self, ranker: int, order: list[str]) -> None:
        """Reorders the ``ranker``-th Ranker (0 = first axis) into ``order``, best first, with the
        keyboard (react-beautiful-dnd: Space lifts, arrows move, Space drops)."""
        for position, item in enumerate(order):
            self._drag(ranker, item, lambda i=item, p=position: ["ARROW_UP"] * (self._column_ids(ranker, 0).index(i) - p),
                       lambda i=item, p=position: self._column_ids(ranker, 0).index(i) == p,
                       f"{item} to drop at place {position + 1}")
        got = self._column_ids(ranker, 0)
        if got != list(order):
            raise AssertionError(f"the ranker shows {got} after the drags, not {list(order)}")

    def sort_into_tiers(self, ranker: int, tiers: list[list[str]]) -> None:
        """Drags each clip from the ``ranker``-th Ranker's list into its tier's column
        (``tiers[0]`` = the first ``Bucket``, the best), by keyboard: Space, right arrows, Space.

        react-beautiful-dnd moves a keyboard drag across lists only into a list it sees whole,
        so before every drag the viewport is made taller than the board (four clips are ~2300 px,
        more once their videos have loaded)."""
        for tier, items in enumerate(tiers, start=1):
            for item in items:
                self._drag(ranker, item, lambda i=item, t=tier: ["ARROW_RIGHT"] * (t - self._column_of(ranker, i)),
                           lambda i=item, t=tier: self._column_of(ranker, i) == t, f"{item} to drop into tier {tier}",
                           before=lambda: self._fit_viewport_to(ranker))
        self._release_viewport()

    def tier_ids(self, ranker: int) -> list[list[str]]:
        """The clips in each column of the ``ranker``-th Ranker: the list first, then each tier."""
        return [self._column_ids(ranker, c) for c in range(self._column_count(ranker))]

    def _drag(self, ranker: int, item: str, keys, landed, what: str, attempts: int = 4, before=None) -> None:
        """One keyboard drag of ``item`` with ``keys()`` until ``landed()``. On a busy machine the
        page can miss a key (a lift still settling, a drop still animating): a drag that did not
        land is cancelled with Escape and tried again from where the item is then, with longer
        pauses, so the test checks the page rather than the machine's load."""
        for attempt in range(attempts):
            if landed():
                return
            if before:
                before()
            self._move(ranker, item, keys(), pause=0.3 * (attempt + 1))
            try:
                wait_for(landed, 10, what)
                return
            except TimeoutError:
                if attempt == attempts - 1:
                    raise TimeoutError(f"waited 10 s, {attempts} times, for {what}; the page: "
                                       f"{self._layout(ranker)}") from None
                self._cancel_drag()

    def _fit_viewport_to(self, ranker: int) -> None:
        """Emulates a viewport taller than the ``ranker``-th board (a headless window may not grow
        past its screen; the emulated viewport does)."""
        layout = self._layout(ranker)
        if layout["board"] + 600 > layout["viewport"][1]:
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": layout["viewport"][0], "height": layout["board"] + 1000,
                "deviceScaleFactor": 1, "mobile": False})
            time.sleep(1.0)  # the page lays itself out again

    def _release_viewport(self) -> None:
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    def _layout(self, ranker: int) -> dict:
        """The viewport's size, the board's height and each column's top and bottom, in px."""
        return self.driver.execute_script(BOARDS + """
            const b = boards[arguments[0]];
            const cols = Array.from(b.querySelectorAll('.htx-ranker-column')).map(c => c.getBoundingClientRect());
            return {viewport: [window.innerWidth, window.innerHeight],
                    board: Math.max(b.scrollHeight, ...cols.map(r => r.height)),
                    columns: cols.map(r => [Math.round(r.top), Math.round(r.bottom)])};""", ranker)

    def _column_of(self, ranker: int, item: str) -> int:
        return next(c for c, ids in enumerate(self.tier_ids(ranker)) if item in ids)

    def _column_count(self, ranker: int) -> int:
        return self.driver.execute_script(
            BOARDS + "return boards[arguments[0]].querySelectorAll('.htx-ranker-column').length;", ranker)

    def _column_ids(self, ranker: int, column: int) -> list[str]:
        return self.driver.execute_script(BOARDS + """
            const col = boards[arguments[0]].querySelectorAll('.htx-ranker-column')[arguments[1]];
            return Array.from(col.querySelectorAll('[data-ranker-id]')).map(e => e.dataset.rankerId);""",
            ranker, column)

    def _handle(self, ranker: int, item: str):
        return self.driver.execute_script(BOARDS + """
            return boards[arguments[0]].querySelector('[data-ranker-id="' + arguments[1] + '"]');""", ranker, item)

    def _move(self, ranker: int, item: str, keys: list[str], pause: float = 0.3) -> None:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        if not keys:
            return
        handle = self._handle(ranker, item)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].focus()", handle)
        chain = ActionChains(self.driver).pause(pause).send_keys(Keys.SPACE).pause(pause)
        for key in keys:
            chain = chain.send_keys(getattr(Keys, key)).pause(pause)
        chain.send_keys(Keys.SPACE).pause(pause + 0.2).perform()

    def _cancel_drag(self) -> None:
        """Escape ends a keyboard drag that is still lifted (react-beautiful-dnd puts the item back)."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        ActionChains(self.driver).send_keys(Keys.ESCAPE).pause(1.0).perform()

    def submit(self) -> None:
        self.click(self.submit_button())

    def skip(self) -> None:
        self.click(self.find("//button[normalize-space()='Skip']", "the Skip button"))

    def warning(self, timeout: float = 10) -> str:
        """The text of the modal the page raised (e.g. a required axis left empty), closing it."""
        modal = self.find("//div[contains(@class, 'ant-modal-confirm-body-wrapper')][.//button]", "a warning", timeout)
        text = wait_for(lambda: modal.text.strip(), 10, "the warning's text")
        modal.find_element("xpath", ".//button").click()
        wait_for(lambda: gone(modal), 10, "the warning to close")
        return text

    def saved(self, task: int) -> dict:
        """What the server has saved for the task now: ``{"annotations": N, "cancelled": N}``
        (the annotations API leaves skips out; the task's counters have them)."""
        state = self.driver.execute_async_script(FETCH_JSON, f"/api/tasks/{task}")
        return {"annotations": state["total_annotations"], "cancelled": state["cancelled_annotations"]}


def main() -> int:
    project, task = int(sys.argv[1]), int(sys.argv[2])
    page = Annotator(browser(), os.environ["LABEL_STUDIO_URL"])
    try:
        page.login(os.environ["LABEL_STUDIO_USERNAME"], os.environ["LABEL_STUDIO_PASSWORD"])
        page.open(project, task)
        page.shown_clips()
        seen = {"videos": page.play_all()}
    finally:
        if os.environ.get("BROWSER_SCREENSHOT"):
            page.driver.save_screenshot(os.environ["BROWSER_SCREENSHOT"])
        page.driver.quit()
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
