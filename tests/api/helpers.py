from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.artifacts.service import publish_model
from app.broker import worker_queues
from app.db import commit, transaction
from app.jobs import lifecycle
from app.models import Job, JobStatus, Worker, utcnow
from tests.conftest import TINY_MODEL
from tests.factories import sentiment_rows, write_rows, write_tiny_bert


def upload_file(api: TestClient, path: Path, headers: dict[str, str] | None = None,
                **fields: str) -> Any:
    with path.open("rb") as stream:
        return api.post("/v1/datasets", files={"file": (path.name, stream)}, data=fields,
                        headers=headers)


def upload_rows(api: TestClient, tmp_path: Path, rows: list[dict[str, Any]],
                filename: str = "train.csv",
                headers: dict[str, str] | None = None) -> dict[str, Any]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    response = upload_file(api, write_rows(tmp_path / filename, rows), headers)
    assert response.status_code == 201, response.text
    return response.json()


def sentiment_dataset(api: TestClient, tmp_path: Path, n: int = 40,
                      headers: dict[str, str] | None = None) -> dict[str, Any]:
    return upload_rows(api, tmp_path, sentiment_rows(n), headers=headers)


def job_spec(dataset_id: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"task": "text-classification", "model": TINY_MODEL,
                            "dataset": {"train": dataset_id, "validation_split": 0.2}}
    spec.update(overrides)
    return spec


def submit_a_job(base_url: str, headers: dict[str, str], folder: Path) -> str:
    """A queued job, submitted over real HTTP to the API at `base_url`; its id."""
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
        dataset = sentiment_dataset(client, folder)  # type: ignore[arg-type]
        job = client.post("/v1/jobs", json=job_spec(dataset["id"]))
        assert job.status_code == 201, job.text
        return job.json()["id"]


def assert_error(response: Any, status: int, code: str, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    if param is not None:
        assert error.get("param") == param, error
    return error


def move_job(api: TestClient, job_id: str, source: JobStatus, target: JobStatus) -> None:
    """Put a job where a worker would take it, with no worker: no attempt, lease or event."""
    stamps = {"finished_at": utcnow()} if target in lifecycle.TERMINAL else {}
    with api.app.state.session_factory() as session:
        moved = session.execute(update(Job).where(Job.id == job_id, Job.status == source)
                                .values(status=target, **stamps))
        assert moved.rowcount == 1
        commit(session)


def start_job(api: TestClient, job_id: str) -> None:
    move_job(api, job_id, JobStatus.QUEUED, JobStatus.RUNNING)


GIB = 1024**3


def place_worker(api: TestClient, worker_id: str, gpu_type: str, gpus: int, *,
                 silent_seconds: float = 0.0, job_id: str | None = None) -> None:
    """A worker's row as its heartbeat leaves it, last written `silent_seconds` ago."""
    beat = utcnow() - timedelta(seconds=silent_seconds)
    with transaction(api.app.state.session_factory) as session:
        session.add(Worker(id=worker_id, host=worker_id.split(":")[0],
                           pid=int(worker_id.split(":")[1]), gpu_type=gpu_type, gpus=gpus,
                           gpu_memory_bytes=80 * GIB, queues=worker_queues(gpu_type, gpus),
                           status="busy" if job_id else "idle", job_id=job_id,
                           started_at=beat, heartbeat_at=beat))


def job_with_published_model(api: TestClient, tmp_path: Path) -> dict[str, Any]:
    """A succeeded job whose trainer wrote a model folder, published as the worker publishes
    it into the API's store."""
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
    return job
