"""Browser tests of the dashboard (/ui/): the real service (PostgreSQL, Redis, the API and a
worker as processes) driven by Debian's headless Chromium through Selenium.

Each test works in a project of its own, so that what other tests made stays out of its lists.
Every page a test looks at is saved as a screenshot into one folder, FT_TEST_SCREENSHOTS or
else <basetemp>/dashboard-screenshots, which the run's summary names. After each test the
browser's console must hold no error (a Content-Security-Policy violation shows there) except
the failed requests the test caused on purpose.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import os
import re
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.service import Service, production_service
from tests.factories import sentiment_rows, write_rows

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The browser and its driver are Debian's: Selenium Manager must never fetch others.
os.environ.setdefault("SE_OFFLINE", "true")
DESKTOP = {"width": 1280, "height": 1000}
PHONE = {"width": 390, "height": 844}
SCREENSHOTS = pytest.StashKey[Path]()
FAILED = pytest.StashKey[bool]()
T = TypeVar("T")
MARKUP_DATASET_NAME = "<img src=x onerror=alert(1)>"
MARKUP_JOB_NAME = "<script>alert(2)</script><img src=x onerror=alert(3)>"
MISSING_MODEL = "tiny/nope"


@pytest.fixture(scope="package")
def service(tmp_path_factory: pytest.TempPathFactory, model_catalog: Path) -> Iterator[Service]:
    """One service for the folder. Package scope stops its worker before tests/e2e starts
    services on the same Redis database."""
    with production_service(tmp_path_factory.mktemp("dashboard"), model_catalog) as running:
        yield running


@pytest.fixture(scope="package")
def admin_key(service: Service) -> str:
    return service.create_key("operators", admin=True)


@pytest.fixture(scope="package")
def new_project(service: Service, admin_key: str) -> Iterator[Callable[[], Service]]:
    """Makes the service as a new project sees it: its client holds a key of that project."""
    clients: list[httpx.Client] = []

    def make() -> Service:
        created = service.client.post(
            "/v1/keys", json={"project": f"ui-{uuid.uuid4().hex[:10]}"},
            headers={"Authorization": f"Bearer {admin_key}"})
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        clients.append(httpx.Client(base_url=service.client.base_url, timeout=60,
                                    headers={"Authorization": f"Bearer {key}"}))
        return dataclasses.replace(service, client=clients[-1], api_key=key)

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def project(new_project: Callable[[], Service]) -> Service:
    return new_project()


def upload_named(project: Service, path: Path, name: str) -> dict[str, Any]:
    with path.open("rb") as stream:
        response = project.client.post("/v1/datasets", files={"file": (path.name, stream)},
                                       data={"name": name})
    assert response.status_code == 201, response.text
    return response.json()


@dataclasses.dataclass(frozen=True)
class FailedJob:
    owner: Service
    dataset: dict[str, Any]
    job: dict[str, Any]


@pytest.fixture(scope="package")
def failed_job(new_project: Callable[[], Service],
               tmp_path_factory: pytest.TempPathFactory) -> FailedJob:
    """A job, in a project of its own, that failed as soon as a worker took it: its model is
    in no catalog. The job and its dataset are named with markup. Shared, as each job costs a
    worker seconds to start its trainer."""
    owner = new_project()
    rows = write_rows(tmp_path_factory.mktemp("failed") / "train.csv", sentiment_rows(16))
    dataset = upload_named(owner, rows, MARKUP_DATASET_NAME)
    job = owner.submit({"task": "text-classification", "model": MISSING_MODEL,
                        "name": MARKUP_JOB_NAME, "dataset": {"train": dataset["id"]}})
    finished = owner.wait_for(job["id"], timeout=120)
    assert finished["status"] == "failed", finished
    return FailedJob(owner, dataset, finished)


@pytest.fixture(scope="session")
def screenshot_dir(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("FT_TEST_SCREENSHOTS")
                  or tmp_path_factory.getbasetemp() / "dashboard-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    request.config.stash[SCREENSHOTS] = folder
    return folder


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    folder = config.stash.get(SCREENSHOTS, None)
    if folder is not None:
        terminalreporter.write_sep("-", "dashboard")
        terminalreporter.write_line(f"dashboard screenshots: {folder}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Marks a test that failed, for `browser` to save the page it failed on."""
    report = yield
    if report.when == "call" and report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture(scope="package")
def driver() -> Iterator[webdriver.Chrome]:
    """One headless Chromium for the folder (it takes seconds to start); `browser` resets it
    for each test."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     f"--window-size={DESKTOP['width']},{DESKTOP['height']}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    yield chrome
    chrome.quit()


class Browser:
    """The dashboard in one Chromium tab, with the waits and screenshots the tests share."""

    def __init__(self, driver: webdriver.Chrome, base_url: str, screenshots: Path,
                 test_name: str, downloads: Path) -> None:
        self.driver = driver
        self.base_url = base_url.rstrip("/")
        self.screenshots = screenshots
        self.test_name = test_name
        self.downloads = downloads
        self._shots = itertools.count(1)
        self._console: list[dict[str, Any]] = []
        self._expected_errors: list[re.Pattern[str]] = []

    def reset(self) -> None:
        """Forget the previous test: its key (on a page of the origin, which sessionStorage
        belongs to), its console messages, its download folder and a phone's viewport."""
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        self.driver.get(f"{self.base_url}/readyz")
        self.driver.execute_script("sessionStorage.clear()")
        self.driver.get_log("browser")
        self.downloads.mkdir(parents=True, exist_ok=True)
        # Headless Chromium saves downloads only where told to.
        self.driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                                    {"behavior": "allow", "downloadPath": str(self.downloads)})

    def open(self, route: str = "") -> None:
        """Loads /ui/<route>; when the dashboard is open already, only the hash changes."""
        self.driver.get(f"{self.base_url}/ui/{route}")

    def sign_in(self, key: str) -> None:
        self.open()
        self.find("#api-key").send_keys(key)
        self.find("#sign-in [type=submit]").click()
        self.wait(lambda: self.find("#nav").is_displayed(), "the navigation after sign-in")

    def wait(self, condition: Callable[[], T], message: str = "", timeout: float = 30) -> T:
        """`condition()` once it is truthy; elements missing or replaced meanwhile are retried."""
        return WebDriverWait(
            self.driver, timeout, poll_frequency=0.1,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        ).until(lambda _: condition(), message)

    def find(self, css: str, timeout: float = 30) -> WebElement:
        return self.wait(lambda: self.driver.find_element(By.CSS_SELECTOR, css),
                         f"no element {css}", timeout)

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def session_storage(self) -> dict[str, str]:
        return self.driver.execute_script(
            "return Object.fromEntries(Object.entries(sessionStorage))")

    def shot(self, label: str) -> None:
        """A screenshot of the whole page, not only the part scrolled into view."""
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        image = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                     "scale": 1}})
        name = f"{self.test_name}-{next(self._shots):02d}-{label}.png"
        (self.screenshots / name).write_bytes(base64.b64decode(image["data"]))

    def phone_shot(self, label: str) -> None:
        """The page as a phone (390x844) lays it out, with its meta viewport obeyed."""
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {**PHONE, "deviceScaleFactor": 1, "mobile": True})
        try:
            self.shot(f"{label}-phone")
            # Wide tables and specs scroll inside their cards; the page itself never does.
            width = self.driver.execute_script("return document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"the page is {width} px wide on a phone"
        finally:
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    def dark_shot(self, label: str) -> str:
        """The page with the system set to dark; answers the page's background colour."""
        self.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
            "features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        try:
            self.wait(lambda: self.driver.execute_script(
                "return matchMedia('(prefers-color-scheme: dark)').matches"), "dark mode")
            self.shot(f"{label}-dark")
            return self.driver.execute_script(
                "return getComputedStyle(document.body).backgroundColor")
        finally:
            self.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})

    def expect_console_error(self, pattern: str) -> None:
        """An error the test causes on purpose, such as the 401 of a wrong key."""
        self._expected_errors.append(re.compile(pattern))

    def console_errors(self) -> list[str]:
        """The SEVERE console messages so far that no expect_console_error allowed."""
        self._console.extend(self.driver.get_log("browser"))
        return [entry["message"] for entry in self._console if entry["level"] == "SEVERE"
                and not any(p.search(entry["message"]) for p in self._expected_errors)]

    def downloaded(self, timeout: float = 30) -> Path:
        """The one file downloaded so far, once Chromium has finished writing it."""
        def finished() -> Path | None:
            files = list(self.downloads.iterdir())
            done = [f for f in files if not f.name.endswith(".crdownload")]
            return done[0] if len(files) == len(done) == 1 else None
        return self.wait(finished, f"no download in {self.downloads}", timeout)


@pytest.fixture
def browser(driver: webdriver.Chrome, service: Service, screenshot_dir: Path,
            request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Browser]:
    tab = Browser(driver, str(service.client.base_url), screenshot_dir, request.node.name,
                  tmp_path / "downloads")
    tab.reset()
    yield tab
    if request.node.stash.get(FAILED, False):
        tab.shot("failed")
    assert tab.console_errors() == [], "the browser console shows errors"
