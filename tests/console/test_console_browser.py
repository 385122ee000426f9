"""The console in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) signs in with the keyboard, filters the runs, opens a failed run and reads
its failing step's reason, watches the run log refresh, and retries a failed job, with the
Content-Security-Policy enforced. A screenshot of each page goes to `tests/screenshots/`.

`.ci/run` sets GATEWAY_TEST_BROWSER=1: there a missing browser fails these tests; elsewhere
they are skipped without one."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from console_support import admin_key, config, failed_job

from gateway.compiler.loader import load
from gateway.server.app import create_app
from gateway.storage import Job, open_storage

CHROMIUM = Path("/usr/bin/chromium")
DRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).parent / "screenshots"
REQUIRED = os.environ.get("GATEWAY_TEST_BROWSER") == "1"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900"]

if not (CHROMIUM.exists() and DRIVER.exists()):
    if REQUIRED:
        pytest.fail(f"GATEWAY_TEST_BROWSER=1 but {CHROMIUM} or {DRIVER} is missing "
                    "(apt-get install chromium chromium-driver)", pytrace=False)
    pytest.skip("no Chromium here (apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402 - only once the browser is known to be there
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402


async def _prepare(url: str) -> tuple[str, Job]:
    storage = open_storage(url)
    await storage.open()
    try:
        return await admin_key(storage), await failed_job(storage, "ERROR: the SMTP server "
                                                                   "refused the message")
    finally:
        await storage.close()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[str, str, Job]]:
    """A real gateway on a loopback port: its URL, an admin key, and a failed job."""
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    folder = config(tmp_path)
    key, failed = asyncio.run(_prepare(url))
    app = create_app(load([folder]), open_storage(url), scheduler=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", key, failed
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="gateway-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(DRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def shot(driver: webdriver.Chrome, name: str) -> None:
    """A screenshot of the whole page, for review."""
    SCREENSHOTS.mkdir(exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height) + 20, 700), 4000))
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    driver.set_window_size(1280, 900)


def wait_for(driver: webdriver.Chrome, what: str, condition: object, seconds: float = 15) -> None:
    # An element found just before the page it is on is replaced goes stale: look again.
    WebDriverWait(driver, seconds, ignored_exceptions=[StaleElementReferenceException]).until(
        condition, message=f"waited for {what}")


def test_an_operator_signs_in_finds_a_failure_and_retries_a_job(
        gateway: tuple[str, str, Job], browser: webdriver.Chrome) -> None:
    base, key, failed = gateway
    httpx.post(f"{base}/api/1.1/wf/create-lead", json={"email": "ada@example.com"})
    charge = httpx.post(f"{base}/api/1.1/wf/charge-card", json={"amount": 42})
    run_id = charge.headers["x-run-id"]

    browser.get(f"{base}/console/runs")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Sign in"
    shot(browser, "01-sign-in")
    # The key field has the focus: typing and Enter sign in, with no mouse.
    browser.switch_to.active_element.send_keys("a wrong key" + Keys.ENTER)
    wait_for(browser, "the refusal", lambda d: "not an admin API key" in d.page_source)
    browser.find_element(By.ID, "key").send_keys(key + Keys.ENTER)
    wait_for(browser, "the runs page", lambda d: d.find_element(By.TAG_NAME, "h1").text
             == "Runs")
    wait_for(browser, "both runs", lambda d: "charge-card" in d.find_element(
        By.ID, "run-rows").text and "create-lead" in d.find_element(By.ID, "run-rows").text)
    shot(browser, "04-runs")

    Select(browser.find_element(By.ID, "f-status")).select_by_value("failed")
    browser.find_element(By.CSS_SELECTOR, ".filters button[type=submit]").click()
    wait_for(browser, "the filtered runs", lambda d: "status=failed" in d.current_url)
    rows = browser.find_element(By.ID, "run-rows").text
    assert "charge-card" in rows and "create-lead" not in rows
    shot(browser, "05-runs-failed")

    browser.find_element(By.CSS_SELECTOR, f'a[href="/console/runs/{run_id}"]').click()
    wait_for(browser, "the run", lambda d: run_id in d.page_source)
    failing = browser.find_element(By.CSS_SELECTOR, "tr.failed-step")
    assert "refuse" in failing.text and "the card was declined for 42" in failing.text
    shot(browser, "06-run")

    browser.get(f"{base}/console/runs")
    httpx.post(f"{base}/api/1.1/wf/create-lead", json={"email": "grace@example.com"})
    wait_for(browser, "the run log to refresh by itself",
             lambda d: len(d.find_elements(By.CSS_SELECTOR, "#run-rows tr")) == 3, 20)

    browser.find_element(By.LINK_TEXT, "Overview").click()
    wait_for(browser, "the overview", lambda d: d.find_element(By.TAG_NAME, "h1").text
             == "Overview")
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.s-failed")
    shot(browser, "02-overview")
    browser.find_element(By.LINK_TEXT, "Workflows").click()
    wait_for(browser, "the workflows", lambda d: "nightly-cleanup" in d.page_source)
    shot(browser, "03-workflows")

    browser.find_element(By.LINK_TEXT, "Jobs").click()
    browser.find_element(By.LINK_TEXT, "Failed").click()
    wait_for(browser, "the failed jobs", lambda d: "SMTP server refused" in d.page_source)
    shot(browser, "07-jobs-failed")
    browser.find_element(By.CSS_SELECTOR, f'button[aria-label="Retry job {failed.id}"]').click()
    wait_for(browser, "the retried job", lambda d: "pending again" in d.page_source)
    assert "pending" in browser.find_element(By.CSS_SELECTOR, "dl.facts").text
    shot(browser, "08-job")

    # (The sign-in form is served with a 401, which the browser notes; nothing else may be.)
    problems = [entry["message"] for entry in browser.get_log("browser")
                if entry["level"] in ("SEVERE", "WARNING") and "status of 401" not in
                entry["message"]]
    assert not problems, problems  # no CSP violation, no script error, no missing asset
    browser.find_element(By.CSS_SELECTOR, ".sign-out button").click()
    wait_for(browser, "the sign-in form", lambda d: d.find_element(By.TAG_NAME, "h1").text
             == "Sign in")
    browser.get(f"{base}/console/jobs")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Sign in"
