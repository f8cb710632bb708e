"""What the dashboard must never do: show another project's data, or run markup that a
dataset's or a job's name holds."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By

from tests.dashboard.conftest import (
    MARKUP_DATASET_NAME,
    MARKUP_JOB_NAME,
    MISSING_MODEL,
    Browser,
    FailedJob,
)
from tests.e2e.service import Service

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def assert_no_alert(browser: Browser) -> None:
    with pytest.raises(NoAlertPresentException):
        browser.driver.switch_to.alert.text  # noqa: B018 (reading it is the check)


def assert_listed_as_text(browser: Browser, listing: str, row: str, link: str,
                          name: str) -> None:
    """The list at #/<listing> has `row`, whose `link` reads `name` letter for letter, and
    the list holds no element that the name's markup would have made."""
    browser.open(f"#/{listing}")
    found = browser.find(f"#{listing} {row}")
    assert found.find_element(By.CSS_SELECTOR, link).text == name
    assert browser.find_all(f"#{listing} img, #{listing} script") == []
    browser.shot(listing)
    assert_no_alert(browser)


def test_names_made_of_markup_show_as_text(browser: Browser, failed_job: FailedJob) -> None:
    dataset, job = failed_job.dataset, failed_job.job
    browser.sign_in(failed_job.owner.api_key)

    assert_listed_as_text(browser, "datasets", f"tr[data-dataset-id='{dataset['id']}']",
                          "a.dataset-link", MARKUP_DATASET_NAME)

    browser.open(f"#/datasets/{dataset['id']}")
    assert browser.wait(lambda: browser.find("#dataset-name").text) == MARKUP_DATASET_NAME
    assert browser.find_all("#view img") == []
    browser.shot("dataset")
    assert_no_alert(browser)

    assert_listed_as_text(browser, "jobs", f"tr[data-job-id='{job['id']}']", "a.job-link",
                          MARKUP_JOB_NAME)

    browser.open(f"#/jobs/{job['id']}")
    browser.wait(lambda: MARKUP_JOB_NAME in browser.find("#view h1").text, "the job's name")
    assert browser.find_all("#view img, #view script") == []
    browser.shot("job")
    assert_no_alert(browser)


def test_another_project_sees_nothing(browser: Browser, failed_job: FailedJob,
                                      new_project: Callable[[], Service]) -> None:
    job_id = failed_job.job["id"]
    # The job page asks for the job, its events and more: each is a 404 for a stranger.
    browser.expect_console_error(rf"/v1/jobs/{job_id}\S* - Failed to load resource: "
                                 r"the server responded with a status of 404")
    browser.sign_in(new_project().api_key)

    browser.open("#/jobs")
    browser.find("#jobs .empty")
    assert browser.find_all("#jobs tr[data-job-id]") == []
    browser.shot("jobs")

    browser.open("#/datasets")
    browser.find("#datasets .empty")
    assert browser.find_all("#datasets tr[data-dataset-id]") == []
    browser.shot("datasets")

    browser.open(f"#/jobs/{job_id}")
    error = browser.wait(lambda: browser.find("#view .error-box").text, "an error box")
    assert "not_found" in error
    page = browser.find("#view").text
    assert MARKUP_JOB_NAME not in page and MISSING_MODEL not in page
    assert browser.find_all("#job-status") == []
    browser.shot("job-not-found")
