"""Headless Chromium through Selenium for the dashboard tests (Debian's `chromium` and
`chromium-driver`; `.ci/run` installs them).

Without them the browser tests skip, except when `FRONTIER_SIGNAL_REQUIRE_BROWSER=1` (set by
`.ci/run`): then they fail, so CI never passes by skipping. Screenshots go to `tmp/screenshots/`
(gitignored); `console_errors` reads the browser log so a test can fail on console errors.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "tmp" / "screenshots"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1366,900",
]


def _binaries() -> tuple[str | None, str | None]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return browser, driver


def start_browser(download_dir: Path):
    """A fresh headless Chromium (own profile folder), or skip/fail as the module doc says."""
    browser, driver = _binaries()
    webdriver = pytest.importorskip("selenium.webdriver")
    if browser is None or driver is None:
        message = "chromium and chromium-driver are not installed (apt-get install chromium "
        message += "chromium-driver)"
        if os.environ.get("FRONTIER_SIGNAL_REQUIRE_BROWSER") == "1":
            pytest.fail(message + "; FRONTIER_SIGNAL_REQUIRE_BROWSER=1 makes that a failure")
        pytest.skip(message)
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="fs-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(download_dir), "download.prompt_for_download": False},
    )
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    chrome.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)}
    )
    chrome.profile_dir = profile
    return chrome


def stop_browser(chrome) -> None:
    chrome.quit()
    shutil.rmtree(chrome.profile_dir, ignore_errors=True)


def screenshot(chrome, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    chrome.save_screenshot(str(path))
    return path


def console_errors(chrome, allowed: tuple[str, ...] = ()) -> list[str]:
    """SEVERE browser-log entries since the last read, except those containing an allowed
    text (a test that expects a 401 or 404 allows that status's resource error)."""
    entries = chrome.get_log("browser")
    return [
        e["message"]
        for e in entries
        if e["level"] == "SEVERE" and not any(text in e["message"] for text in allowed)
    ]


def wait_for(condition, timeout: float = 30.0, what: str = "the page"):
    """Poll `condition()` until truthy (bounded); returns its value."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - the element may not exist yet
            last_error = exc
        time.sleep(0.1)
    detail = f": {last_error}" if last_error else ""
    raise AssertionError(f"timed out waiting for {what}{detail}")
