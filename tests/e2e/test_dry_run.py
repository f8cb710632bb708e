"""The dry run through the real `finetune api` and `finetune worker` processes: answered by
the worker's dry-run process while its Celery pool trains a job, with the job's step count."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.flows import classic_spec
from tests.e2e.service import running_service
from tests.factories import sentiment_rows, write_rows

pytestmark = pytest.mark.e2e


def test_a_dry_run_answers_while_a_job_trains_and_counts_its_steps(
        tmp_path: Path, model_catalog: Path) -> None:
    workdir = tmp_path / "service"
    workdir.mkdir()
    with running_service({"FT_MODELS_DIR": str(model_catalog),
                          "FT_DRY_RUN_WAIT_SECONDS": "60"}, workdir) as service:
        train = service.upload(write_rows(tmp_path / "train.csv", sentiment_rows(200, seed=1)))
        test = service.upload(write_rows(tmp_path / "test.jsonl", sentiment_rows(30, seed=2)))
        spec = classic_spec(train["id"], test["id"])
        job = service.submit(spec)
        service.wait_for(job["id"], ("running", "succeeded"))

        started = time.monotonic()
        response = service.client.post("/v1/jobs/validate", json=spec)
        answered_in = time.monotonic() - started
        assert response.status_code == 200, response.text
        report = response.json()["report"]
        assert report["valid"], report["errors"]
        assert report["dataset"]["splits"] == {"train": 160, "validation": 40, "test": 30}
        assert report["dataset"]["columns"]["found"] == {"train": ["text", "label"],
                                                         "test": ["text", "label"]}
        assert answered_in < 60

        finished = service.wait_for(job["id"])
        assert finished["status"] == "succeeded", finished["error"]
        assert finished["progress"]["total_steps"] == report["steps"]["total_steps"]
        # The dry run queued nothing: the project has the one job it submitted.
        assert [j["id"] for j in service.client.get("/v1/jobs").json()["data"]] == [job["id"]]

        one_class = service.upload(write_rows(tmp_path / "one.csv", [
            {"text": f"fine film {i}", "label": "positive"} for i in range(20)]))
        failing = service.client.post("/v1/jobs/validate",
                                      json={**spec, "dataset": {"train": one_class["id"]}})
        assert failing.status_code == 200, failing.text
        assert [e["code"] for e in failing.json()["report"]["errors"]] == ["dataset_invalid"]
