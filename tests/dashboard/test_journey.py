"""The person's whole way through the dashboard: upload data, prepare and dry-run a job,
submit it, watch it train, download the model."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest
from selenium.webdriver.support.ui import Select

from tests.conftest import TINY_MODEL
from tests.dashboard.conftest import Browser
from tests.e2e.service import Service
from tests.factories import sentiment_rows, write_rows

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

# Long enough to watch the loss curve grow over a few seconds, short enough for CI.
TRAINING = {"hyperparameters": {"epochs": 30, "batch_size": 8, "learning_rate": 3e-3,
                                "max_seq_length": 8},
            "evaluation": {"strategy": "epoch"}, "logging_steps": 1}
# The rows are 9 tokens long with [CLS] and [SEP]: max_seq_length 8 truncates every one.
TRUNCATION_WARNING = "many_rows_truncated"


def routed(browser: Browser, pattern: str) -> str:
    """The id in the page's hash once it matches `pattern`."""
    def matched() -> str | None:
        found = re.fullmatch(pattern, browser.driver.execute_script("return location.hash"))
        return found.group(1) if found else None
    return browser.wait(matched, f"the address {pattern}")


def job_status(browser: Browser) -> str:
    return browser.find("#job-status .badge[data-status]").get_attribute("data-status")


def loss_points(browser: Browser) -> int:
    return int(browser.find("#chart-loss").get_attribute("data-points"))


def test_upload_dry_run_train_and_download(browser: Browser, project: Service,
                                           tmp_path: Path) -> None:
    rows = sentiment_rows(64, seed=3)
    csv = write_rows(tmp_path / "reviews.csv", rows)
    browser.sign_in(project.api_key)

    browser.find("a[data-nav=datasets]").click()
    browser.find("#upload-file").send_keys(str(csv))
    browser.find("#upload-name").send_keys("reviews")
    assert browser.find("#upload-progress").tag_name == "progress"
    browser.shot("datasets")
    browser.find("#upload-submit").click()

    dataset_id = routed(browser, r"#/datasets/([\w-]+)")
    assert browser.wait(lambda: browser.find("#dataset-name").text) == "reviews"
    preview = browser.find("#preview").text
    assert rows[0]["text"] in preview and rows[1]["text"] in preview
    assert "label" in browser.find("#columns").text
    browser.shot("dataset")

    browser.find("#fine-tune").click()
    train = browser.find("#train-dataset")
    browser.wait(lambda: train.get_attribute("value") == dataset_id, "the dataset preselected")
    Select(browser.find("#task")).select_by_value("text-classification")
    model = browser.find("#model")
    model.clear()
    model.send_keys(TINY_MODEL)
    editor = browser.find("#spec-editor")
    spec = json.loads(editor.get_attribute("value"))
    assert spec["model"] == TINY_MODEL and spec["dataset"]["train"] == dataset_id
    editor.clear()
    editor.send_keys(json.dumps({**spec, **TRAINING}))
    assert browser.find("#spec-error").text == ""

    browser.find("#dry-run").click()
    warning = browser.find(f"#dry-run-report .warning-box[data-code={TRUNCATION_WARNING}]",
                           timeout=90)
    assert TRUNCATION_WARNING in warning.text
    assert browser.find_all("#dry-run-report .error-box") == []
    for card in ("#report-labels", "#report-tokens", "#report-steps", "#report-parameters",
                 "#report-memory", "#report-time"):
        assert browser.find(card).is_displayed(), card
    browser.shot("dry-run")

    browser.find("#submit-job").click()
    job_id = routed(browser, r"#/jobs/([\w-]+)")
    browser.wait(lambda: job_status(browser) == "running" and loss_points(browser) > 0,
                 "the first loss points", timeout=120)
    first = loss_points(browser)
    browser.shot("job-running")
    browser.wait(lambda: loss_points(browser) > first and job_status(browser) == "running",
                 "more loss points while it runs")
    browser.phone_shot("job-running")

    browser.wait(lambda: job_status(browser) == "succeeded", "the job's success", timeout=180)
    total_steps = project.client.get(f"/v1/jobs/{job_id}").json()["progress"]["total_steps"]
    # The chart draws the last points a moment after they arrive, maybe after the badge.
    browser.wait(lambda: loss_points(browser) == total_steps, "a loss point for every step")
    assert int(browser.find("#chart-eval").get_attribute("data-points")) > 0
    assert browser.find("#timeline li[data-kind='succeeded']")
    browser.find("#final-metrics dl")
    browser.shot("job-succeeded")
    light = browser.driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    # The system's dark setting gives a dark page, its curves drawn again in its colours.
    assert brightness(browser.dark_shot("job-succeeded")) < 60 < brightness(light)

    browser.find("#download-model").click()
    with tarfile.open(browser.downloaded()) as archive:
        names = archive.getnames()
    assert "model/config.json" in names and "model/model.safetensors" in names, names

    browser.open("#/jobs")
    browser.find(f"#jobs tr[data-job-id='{job_id}'] .badge[data-status=succeeded]")
    browser.shot("jobs")
    browser.phone_shot("jobs")


def brightness(css_color: str) -> float:
    """The mean of the red, green and blue of `rgb(r, g, b)`, 0 to 255."""
    red, green, blue = (int(part) for part in re.findall(r"\d+", css_color)[:3])
    return (red + green + blue) / 3
