"""Data as distributed, trained as a new user would: a SQuAD 2.0 file, an Alpaca JSON and a
ShareGPT JSON upload as they are, and a job on each names only its task, model and train data."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TINY_GPT2, TINY_MODEL
from tests.e2e.service import Service
from tests.layout_files import alpaca_records, sharegpt_records, write_json, write_squad

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def test_each_layout_trains_with_no_column_fields(service: Service, tmp_path: Path) -> None:
    files = {
        "question-answering": (TINY_MODEL, write_squad(tmp_path / "dev-v2.0.json", 36,
                                                       unanswerable=0.3)),
        "causal-lm": (TINY_GPT2, write_json(tmp_path / "alpaca_data.json", alpaca_records(24))),
    }
    sharegpt = service.upload(write_json(tmp_path / "sharegpt.json", sharegpt_records(24)))
    jobs = [service.submit({"task": "causal-lm", "model": TINY_GPT2,
                            "dataset": {"train": sharegpt["id"]}})]
    for task, (model, path) in files.items():
        dataset = service.upload(path)
        assert task in dataset["fits"], dataset
        jobs.append(service.submit({"task": task, "model": model,
                                    "dataset": {"train": dataset["id"]}}))
    for job in jobs:
        finished = service.wait_for(job["id"])
        assert finished["status"] == "succeeded", (job["spec"], finished["error"])
        assert finished["metrics"]["final"]["train_loss"] > 0
    [qa_job] = [job for job in jobs if job["spec"]["task"] == "question-answering"]
    qa_events = service.client.get(f"/v1/jobs/{qa_job['id']}/events").json()["data"]
    loaded = next(event for event in qa_events if event["kind"] == "dataset_loaded")
    assert loaded["data"]["train_rows"] == 36
