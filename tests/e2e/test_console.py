"""The operator's console in a real browser: Debian's headless Chromium, driven by Selenium through the
system's chromedriver (nothing is downloaded), against one real service on Ray Serve with the SQLite journal.
The grid fills from pools created over HTTP and follows a reserve made elsewhere within a second; pause from
the page, once confirmed, makes the next reserve answer 503 paused; the time slider shows an earlier capacity;
errors are shown in words; with API keys the page asks for the admin key. The tests keep the screenshots in
docs/ current, and run `capacity-service console --open` as the README says."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from capacity_service.client import CapacityClient
from capacity_service.domain import PoolView
from capacity_service.entrypoints.http.app import create_app
from capacity_service.settings import HttpSettings
from devenv._process import free_port
from tests.e2e.test_http_service import Service, wait_until
from tests.support.in_process import InProcessBackend

pytestmark = pytest.mark.usefixtures("ray_session")

# Debian's packages (chromium, chromium-driver), which `scripts/setup dev` installs when they are missing.
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DOCS = Path(__file__).resolve().parents[2] / "docs"
TOMORROW = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
ZONES = ("east", "north", "south")
HOURS = (8, 10, 12, 14)


def pool_id(zone: str, hour: int) -> str:
    return f"{zone}:{TOMORROW + timedelta(hours=hour):%Y-%m-%dT%H}"


def slot(hour: int) -> dict[str, str]:
    start = TOMORROW + timedelta(hours=hour)
    return {"slot_start": start.isoformat(), "slot_end": (start + timedelta(hours=2)).isoformat()}


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    with tempfile.TemporaryDirectory(prefix="e2e-console-") as tmp:
        args = {
            "journal": {"kind": "sql", "url": f"sqlite:///{Path(tmp) / 'capacity.db'}"},
            "hosting": {"namespace": f"e2e-console-{uuid.uuid4().hex[:8]}", "mode": "sharded", "shards": 1},
            "warehouse": {"enabled": False},
            "webhooks": {"enabled": False},
        }
        service = Service(args, free_port())
        service.deploy()
        try:
            yield service
        finally:
            service.undeploy()


@pytest.fixture(scope="module")
def http(service: Service) -> Iterator[httpx.Client]:
    """The pools of the grid, made over HTTP: three zones x four slots of tomorrow, 20 units each."""
    with httpx.Client(base_url=service.url, timeout=30) as client:
        for zone in ZONES:
            for hour in HOURS:
                settings = {"capacity": 20, "zone": zone, **slot(hour)}
                made = client.put(f"/v1/pools/{pool_id(zone, hour)}", json=settings)
                assert made.status_code == 201, made.text
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed (Debian's chromium, chromium-driver): scripts/setup dev")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    # The driver's path given: Selenium Manager is never asked to find (or download) one.
    driver = webdriver.Chrome(service=DriverService(str(CHROMEDRIVER)), options=options)
    driver.set_window_size(1280, 1000)
    try:
        yield driver
    finally:
        driver.quit()


def js(browser: webdriver.Chrome, code: str, *args: Any) -> Any:
    return browser.execute_script(code, *args)


def text_of(browser: webdriver.Chrome, element_id: str) -> str | None:
    """An element's text, read in the page (the page re-renders as it goes: no element is held)."""
    found = js(browser, "return document.getElementById(arguments[0])?.textContent ?? null", element_id)
    return None if found is None else str(found)


def cell(browser: webdriver.Chrome, pool: str) -> str | None:
    found = js(browser, "return document.querySelector(`a.pool[data-pool='${arguments[0]}']`)?.textContent", pool)
    return None if found is None else str(found)


def newest_event(browser: webdriver.Chrome) -> str | None:
    found = js(browser, "return document.querySelector('tr[data-type]')?.dataset.type ?? null")
    return None if found is None else str(found)


def wait(browser: webdriver.Chrome, condition: Callable[[], object], timeout: float = 10.0) -> None:
    WebDriverWait(browser, timeout, poll_frequency=0.02).until(lambda _: condition())


def press(browser: webdriver.Chrome, element_id: str, keys: str | None = None) -> None:
    """Click an element (or type into it), found afresh if the page re-rendered it meanwhile."""
    for _attempt in range(10):
        try:
            element = browser.find_element(By.ID, element_id)
            if keys is None:
                element.click()
            else:
                element.send_keys(keys)
            return
        except StaleElementReferenceException:
            time.sleep(0.05)
    raise AssertionError(f"#{element_id} kept being replaced")


def confirm(browser: webdriver.Chrome, typed: str | None = None) -> None:
    """Answer the page's confirmation: it is open, and asks before anything is done."""
    wait(browser, lambda: js(browser, "return document.getElementById('confirm').open"), 5)
    if typed is not None:
        browser.find_element(By.ID, "confirm-input").clear()
        press(browser, "confirm-input", typed)
    press(browser, "confirm-ok")


def open_pool(browser: webdriver.Chrome, service: Service, pool: str) -> None:
    browser.get(f"{service.url}/console/#/pool/{pool}")
    shown = "return document.getElementById('pool')?.dataset.pool"
    wait(browser, lambda: js(browser, shown) == pool and text_of(browser, "live") == "live")


def test_the_grid_fills_from_pools_made_over_http_and_a_reserve_elsewhere_changes_its_cell_within_a_second(
    browser: webdriver.Chrome, service: Service, http: httpx.Client
) -> None:
    browser.get(f"{service.url}/console")
    every = [pool_id(zone, hour) for zone in ZONES for hour in HOURS]
    wait(browser, lambda: all(cell(browser, pool) == "20" for pool in every), 30)
    wait(browser, lambda: text_of(browser, "live") == "live")
    header = js(browser, "return [...document.querySelectorAll('#grid thead th')].map((th) => th.textContent)")
    assert header == ["zone", *(f"{TOMORROW + timedelta(hours=hour):%Y-%m-%d %H:%M}" for hour in HOURS)]
    reserved = http.post("/v1/reservations", json={"pool_id": pool_id("north", 10), "quantity": 3})
    assert reserved.status_code == 201, reserved.text
    answered = time.monotonic()
    wait(browser, lambda: cell(browser, pool_id("north", 10)) == "17", timeout=1.0)
    assert time.monotonic() - answered < 1.0
    # The grid of docs/console-grid.png: a pool sold out, one low, one paused.
    http.post("/v1/reservations", json={"pool_id": pool_id("north", 8), "quantity": 20})
    http.post("/v1/reservations", json={"pool_id": pool_id("south", 12), "quantity": 17})
    http.post(f"/v1/admin/pools/{pool_id('east', 14)}/pause", json={"reason": "van in the garage"})
    levels = "return document.querySelector(`a.pool[data-pool='${arguments[0]}']`)?.dataset.level"
    wait(browser, lambda: js(browser, levels, pool_id("north", 8)) == "none")
    wait(browser, lambda: js(browser, levels, pool_id("south", 12)) == "low")
    wait(browser, lambda: js(browser, levels, pool_id("east", 14)) == "paused")
    browser.find_element(By.TAG_NAME, "body").screenshot(str(DOCS / "console-grid.png"))  # the page, no margin


def test_pause_from_the_page_makes_the_next_reserve_answer_503_paused(
    browser: webdriver.Chrome, service: Service, http: httpx.Client
) -> None:
    pool = pool_id("south", 8)
    open_pool(browser, service, pool)
    press(browser, "pause")
    assert http.post("/v1/reservations", json={"pool_id": pool}).status_code == 201  # asked, not done yet
    confirm(browser, "flooded depot")
    wait(browser, lambda: "flooded depot" in (text_of(browser, "paused") or ""))
    assert newest_event(browser) == "PoolPaused"  # in the history at once
    refused = http.post("/v1/reservations", json={"pool_id": pool})
    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "paused"), refused.text
    press(browser, "change-capacity")  # a write to a paused pool: refused, and said so in words
    confirm(browser, "25")
    wait(browser, lambda: "paused by an operator" in (text_of(browser, "error") or ""))
    press(browser, "resume")
    confirm(browser)
    wait(browser, lambda: text_of(browser, "paused") is None and newest_event(browser) == "PoolResumed")
    assert http.post("/v1/reservations", json={"pool_id": pool}).status_code == 201


def test_the_time_slider_shows_an_earlier_capacity(browser: webdriver.Chrome, service: Service) -> None:
    pool = pool_id("north", 12)
    open_pool(browser, service, pool)
    press(browser, "change-capacity")
    confirm(browser, "12")
    wait(browser, lambda: text_of(browser, "capacity") == "12" and newest_event(browser) == "PoolConfigured")
    press(browser, "time", Keys.HOME)  # the slider to the pool's first event
    wait(browser, lambda: text_of(browser, "past") is not None and text_of(browser, "capacity") == "20")
    assert js(browser, "return document.getElementById('change-capacity').disabled")  # the past is not acted on
    press(browser, "now")
    wait(browser, lambda: text_of(browser, "past") is None and text_of(browser, "capacity") == "12")


def test_retire_from_the_page_stops_the_pools_sales(
    browser: webdriver.Chrome, service: Service, http: httpx.Client
) -> None:
    pool = pool_id("south", 14)
    open_pool(browser, service, pool)
    press(browser, "retire")
    confirm(browser)
    wait(browser, lambda: text_of(browser, "retired") is not None and newest_event(browser) == "PoolRetired")
    refused = http.post("/v1/reservations", json={"pool_id": pool})
    assert (refused.status_code, refused.json()["error"]["code"]) == (410, "pool_retired"), refused.text


def test_a_pools_page_shows_its_holds_waitlist_and_history(
    browser: webdriver.Chrome, service: Service, http: httpx.Client
) -> None:
    pool = pool_id("east", 10)
    http.post("/v1/reservations", json={"pool_id": pool, "quantity": 14, "request_id": "order-4711"})
    held = http.post("/v1/reservations", json={"pool_id": pool, "quantity": 6, "hold_seconds": 900}).json()
    joined = http.post(f"/v1/pools/{pool}/waitlist", json={"quantity": 2, "request_id": "customer-42"})
    assert joined.status_code == 202, joined.text
    open_pool(browser, service, pool)
    wait(browser, lambda: text_of(browser, "waiting") == "1" and text_of(browser, "remaining") == "0")
    page = text_of(browser, "main") or ""
    assert held["reservation_id"] in page and "customer-42" in page and "WaitlistJoined" in page
    wait(browser, lambda: text_of(browser, "live") == "live")
    browser.save_screenshot(str(DOCS / "console-pool.png"))


def test_the_python_client_reads_the_zones_and_a_pools_past(service: Service, http: httpx.Client) -> None:
    """Through Ray, without HTTP: the zones from a cache replica, the pool from its writer and its journal."""
    pool = pool_id("east", 12)
    assert http.put(f"/v1/pools/{pool}", json={"capacity": 7, "zone": "east", **slot(12)}).status_code == 200
    with CapacityClient(namespace=service.namespace) as client:
        assert [zone.zone for zone in client.zones().zones] == list(ZONES)
        now = client.pool_history(pool)
        assert now.pool is not None and (now.pool.capacity, [e.type for e in now.events][:1]) == (7, ["PoolConfigured"])
        then = client.pool_history(pool, at=now.first_recorded_at)
        assert then.pool is not None and (then.pool.capacity, then.seq_nr) == (20, 1)


# How the page words each error the service may answer (api.js's ``inWords``), asked in the page itself.
IN_WORDS = """
const done = arguments[arguments.length - 1];
import("./api.js").then(({ ApiError, inWords }) => done({
  overloaded: inWords(new ApiError(429, "overloaded", "48 requests are being answered", { retryAfter: "2" })),
  retired: inWords(new ApiError(410, "pool_retired", "pool 'p' is retired: it takes no new reservations")),
  paused: inWords(new ApiError(503, "paused", "pool 'p' is paused by an operator: flood")),
  unknown: inWords(new ApiError(404, "pool_not_found", "pool 'p' does not exist")),
  unreachable: inWords(new ApiError(0, "unreachable", "")),
}));
"""


def test_errors_are_shown_in_words(browser: webdriver.Chrome, service: Service) -> None:
    browser.get(f"{service.url}/console/#/pool/no-such-pool")
    wait(browser, lambda: text_of(browser, "not-found") is not None)
    assert "There is no pool named “no-such-pool”" in (text_of(browser, "not-found") or "")
    words = browser.execute_async_script(IN_WORDS)
    assert words == {
        "overloaded": "The service is overloaded and did nothing. Try again in 2 s.",
        "retired": "Refused, nothing was done: the pool is retired, for good (no new reservations, no changes).",
        "paused": "Refused, nothing was done: pool 'p' is paused by an operator: flood. Resume the pool first.",
        "unknown": "There is no such pool (pool 'p' does not exist).",
        "unreachable": "The service does not answer. Is it running? If you made a change, reload to see whether "
        "it was made.",
    }


@contextlib.contextmanager
def app_served(browser: webdriver.Chrome, backend: InProcessBackend, settings: HttpSettings) -> Iterator[str]:
    """The service's HTTP app over the in-process service, on a port of its own: the app's own behaviour
    (keys, the grid's size) without the cost of another service on Ray."""
    app = create_app(backend, settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 10, "the in-process app listening")
        yield f"http://127.0.0.1:{port}"
    finally:
        js(browser, "sessionStorage.clear()")
        browser.get("about:blank")  # its streams end: the server stops at once
        server.should_exit = True
        thread.join(timeout=10)


def test_with_api_keys_the_page_asks_for_the_admin_key_and_keeps_it_out_of_the_url(
    browser: webdriver.Chrome,
) -> None:
    settings = HttpSettings(api_keys=[SecretStr("user-key")], admin_keys=[SecretStr("admin-key")])
    admin = {"authorization": "Bearer admin-key"}
    with app_served(browser, InProcessBackend(), settings) as url:
        assert httpx.put(f"{url}/v1/pools/p1", json={"capacity": 5, "zone": "north"}, headers=admin).status_code == 201
        browser.get(f"{url}/console/")
        asking = "return document.getElementById('key-dialog').open"
        wait(browser, lambda: js(browser, asking))
        assert text_of(browser, "key-text") == "This service needs an admin key."
        press(browser, "key-input", "user-key")  # a key, but not an admin key
        press(browser, "key-ok")
        wait(browser, lambda: js(browser, asking) and "refused" in (text_of(browser, "key-text") or ""))
        press(browser, "key-input", "admin-key")
        press(browser, "key-ok")
        wait(browser, lambda: cell(browser, "p1") == "5")
        assert "admin-key" not in browser.current_url
        assert js(browser, "return sessionStorage.getItem('capacity-service.admin-key')") == "admin-key"
        wait(browser, lambda: text_of(browser, "live") == "live")  # the stream, read with the key
        assert httpx.post(f"{url}/v1/reservations", json={"pool_id": "p1"}, headers=admin).status_code == 201
        wait(browser, lambda: cell(browser, "p1") == "4", timeout=2.0)


def test_the_grid_of_10000_pools_shows_a_page_of_them(browser: webdriver.Chrome) -> None:
    """50 zones x 200 slots, as the availability cache has them: the page holds 20 zones x 12 slots."""
    backend = InProcessBackend()
    for k in range(10_000):
        zone, hour = f"zone-{k % 50:02d}", k // 50
        start = TOMORROW + timedelta(hours=hour)
        view = PoolView(f"{zone}:{hour:03d}", True, zone, start, start + timedelta(hours=1), 10, 3, 7, 1)
        backend.publish_view(view)
    with app_served(browser, backend, HttpSettings()) as url:
        browser.get(f"{url}/console/")
        chips = "return document.querySelectorAll('#grid a.pool').length"
        wait(browser, lambda: js(browser, chips) == 20 * 12, 30)
        assert js(browser, "return document.getElementsByTagName('*').length") < 2_000
        rows = "return [...document.querySelectorAll('#grid tbody tr')].map((row) => row.dataset.zone)"
        assert js(browser, rows) == [f"zone-{z:02d}" for z in range(20)]
        assert cell(browser, "zone-00:000") == "7" and cell(browser, "zone-00:012") is None
        press(browser, "slots-next")
        wait(browser, lambda: cell(browser, "zone-00:012") == "7" and cell(browser, "zone-00:000") is None)
        press(browser, "zones-next")
        wait(browser, lambda: js(browser, rows) == [f"zone-{z:02d}" for z in range(20, 40)])
        wait(browser, lambda: js(browser, chips) == 20 * 12, 30)


def test_the_console_command_prints_and_opens_its_address(service: Service, tmp_path: Path) -> None:
    """`capacity-service console --open`, with a stand-in browser ($BROWSER, as Python's webbrowser reads it)."""
    opened = tmp_path / "opened"
    fake_browser = tmp_path / "browser"
    fake_browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    fake_browser.chmod(0o755)
    env = {**os.environ, "BROWSER": str(fake_browser)}
    command = [sys.executable, "-m", "capacity_service", "--url", service.url, "console", "--open"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"{service.url}/console/"
    assert opened.read_text().strip() == f"{service.url}/console/"
