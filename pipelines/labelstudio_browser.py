"""A real browser on a pairwise task: both clips play with sound, and a click reaches the export.

    LABEL_STUDIO_URL=http://127.0.0.1:PORT LABEL_STUDIO_USERNAME=... LABEL_STUDIO_PASSWORD=... \\
        ~/.cache/tandem/label-studio-1.23.2/bin/python pipelines/labelstudio_browser.py PROJECT TASK

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium chromium-driver``)
and selenium in Label Studio's venv (scripts/install_labelstudio.sh installs it). Headless
chromium logs in, opens the task's labeling page, checks that it shows two ``<video>`` elements
with native controls, unmuted, whose audio decodes when played, clicks the first "A better"
(the config's first axis) and Submit. Prints one JSON line: what it saw (``BROWSER_SCREENSHOT=
file.png`` also saves the page). Every host but 127.0.0.1 is unresolvable to it.
Like labelstudio_ops.py it imports nothing from tandem (it runs in Label Studio's venv).
"""

from __future__ import annotations

import json
import os
import sys
import time


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


def wait_for(fn, timeout: float = 120, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Exception:  # the page is still rendering
            pass
        time.sleep(0.5)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}")


VIDEO_STATE = """
return Array.from(document.querySelectorAll('video')).map(v => ({
  src: v.currentSrc, controls: v.controls, muted: v.muted, duration: v.duration,
  readyState: v.readyState, audioBytes: v.webkitAudioDecodedByteCount}));
"""


def main() -> int:
    from selenium.webdriver.common.by import By

    project, task = sys.argv[1], sys.argv[2]
    url = os.environ["LABEL_STUDIO_URL"].rstrip("/")
    driver = browser()
    seen: dict = {}
    try:
        driver.get(f"{url}/user/login/")
        wait_for(lambda: driver.find_element(By.NAME, "email"), what="the login form").send_keys(
            os.environ["LABEL_STUDIO_USERNAME"])
        driver.find_element(By.NAME, "password").send_keys(os.environ["LABEL_STUDIO_PASSWORD"])
        driver.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
        wait_for(lambda: "/user/login" not in driver.current_url, what="the login")
        driver.get(f"{url}/projects/{project}/data?task={task}")
        wait_for(lambda: len(driver.execute_script(VIDEO_STATE)) >= 2, what="two videos on the labeling page")
        driver.execute_script("document.querySelectorAll('video').forEach(v => v.play())")
        videos = wait_for(lambda: (lambda s: s if all(v["audioBytes"] > 0 for v in s) else None)(
            driver.execute_script(VIDEO_STATE)), timeout=60, what="both clips' audio to decode")
        seen["videos"] = videos
        # the first "A better" belongs to the first axis of the config: AXIS must be that one
        choice = wait_for(lambda: driver.find_element(By.XPATH, "//label[contains(normalize-space(.), 'A better')]"),
            what="the 'A better' choice")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", choice)
        choice.click()
        submit = wait_for(lambda: driver.find_element(By.XPATH, "//button[normalize-space()='Submit']"),
                          what="the Submit button")
        submit.click()
        wait_for(lambda: "Update" in driver.page_source or "submitted" in driver.page_source.lower(),
                 timeout=60, what="the annotation to be saved")
        seen["submitted"] = True
    finally:
        if os.environ.get("BROWSER_SCREENSHOT"):
            driver.save_screenshot(os.environ["BROWSER_SCREENSHOT"])
        driver.quit()
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
