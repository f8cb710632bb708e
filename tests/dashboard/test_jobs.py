"""The jobs list follows the project's stream; a failed job's page says why it failed."""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium.webdriver.support.ui import Select

from tests.conftest import TINY_MODEL
from tests.dashboard.conftest import Browser, FailedJob
from tests.e2e.service import Service
from tests.factories import sentiment_rows, write_rows

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def row_status(browser: Browser, job_id: str) -> str | None:
    badge = browser.find_all(f"#jobs tr[data-job-id='{job_id}'] .badge[data-status]")
    return badge[0].get_attribute("data-status") if badge else None


def test_the_jobs_list_is_live_and_filters(browser: Browser, project: Service,
                                           tmp_path: Path) -> None:
    dataset = project.upload(write_rows(tmp_path / "train.csv", sentiment_rows(16)))
    browser.sign_in(project.api_key)
    browser.open("#/jobs")
    browser.find("#jobs .empty")
    # A reload would drop this mark: the new row must come without one.
    browser.driver.execute_script("window.stillThePage = true")

    job = project.submit({"task": "text-classification", "model": TINY_MODEL,
                          "name": "appears-live", "dataset": {"train": dataset["id"]}})
    browser.wait(lambda: row_status(browser, job["id"]), "the new job's row")
    browser.shot("new-job-row")
    # Cancelled before it trains: the worker's time goes to the tests that need it.
    assert project.client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    browser.wait(lambda: row_status(browser, job["id"]) == "cancelled",
                 "the row turning cancelled", timeout=60)
    assert browser.driver.execute_script("return window.stillThePage") is True
    browser.shot("cancelled-row")

    Select(browser.find("#status-filter")).select_by_value("succeeded")
    browser.find("#jobs .empty")
    assert browser.find_all("#jobs tr[data-job-id]") == []
    browser.shot("filter-succeeded")

    Select(browser.find("#status-filter")).select_by_value("cancelled")
    browser.wait(lambda: row_status(browser, job["id"]) == "cancelled", "the cancelled job")
    assert len(browser.find_all("#jobs tr[data-job-id]")) == 1
    browser.shot("filter-cancelled")


def test_a_failed_job_shows_its_error_code(browser: Browser, failed_job: FailedJob) -> None:
    job = failed_job.job
    assert job["error"]["code"] == "model_not_found"
    browser.sign_in(failed_job.owner.api_key)
    browser.open(f"#/jobs/{job['id']}")

    assert browser.wait(lambda: browser.find("#job-error .code").text) == "model_not_found"
    assert browser.find("#job-status .badge").get_attribute("data-status") == "failed"
    browser.find("#timeline li[data-kind='failed']")
    assert browser.find_all("#download-model") == []
    browser.shot("failed-job")
