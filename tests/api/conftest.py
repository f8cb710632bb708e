from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.artifacts.service import publish_model
from app.db import commit
from app.models import JobStatus
from tests.api.helpers import job_spec, move_job, sentiment_dataset, start_job
from tests.factories import write_tiny_bert


@pytest.fixture
def finished_job(api: TestClient, tmp_path: Path) -> dict[str, Any]:
    """A job whose trainer wrote a model folder, published as the worker publishes it."""
    dataset = sentiment_dataset(api, tmp_path)
    job = api.post("/v1/jobs", json=job_spec(dataset["id"])).json()
    start_job(api, job["id"])
    storage = api.app.state.storage
    trained = write_tiny_bert(storage.job_work_dir(job["id"]) / "model")
    (trained / "metrics.json").write_text('{"eval_accuracy": 1.0}')
    with api.app.state.session_factory() as session:
        session.add_all(publish_model(storage, job["id"], trained))
        commit(session)
    move_job(api, job["id"], JobStatus.RUNNING, JobStatus.SUCCEEDED)
    # Something outside the model folder that must never be served.
    (storage.job_dir(job["id"]) / "secret.txt").write_text("not yours")
    return job
