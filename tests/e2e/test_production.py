"""The production path: PostgreSQL, Redis, and the API and a worker as separate processes."""

from __future__ import annotations

import http.client
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TINY_MODEL, postgres_database
from tests.e2e.flows import train_download_predict
from tests.e2e.service import Service, production_service, service_env, trainer_pid
from tests.factories import sentiment_rows, write_rows

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, model_catalog: Path) -> Iterator[Service]:
    with production_service(tmp_path_factory.mktemp("production"), model_catalog) as running:
        yield running


def long_spec(dataset_id: str) -> dict[str, Any]:
    """A job that runs until it is stopped."""
    return {"task": "text-classification", "model": TINY_MODEL,
            "dataset": {"train": dataset_id}, "hyperparameters": {"max_steps": 1_000_000},
            "logging_steps": 1}


def test_api_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    with postgres_database() as url:
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", "api", "--port", "1"],
            env=service_env({"FT_DATABASE_URL": url, "FT_STORAGE_DIR": str(tmp_path)}),
            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "finetune migrate" in result.stdout + result.stderr


def test_train_download_predict(service: Service, tmp_path: Path) -> None:
    train_download_predict(service, tmp_path)


def test_failed_jobs_say_why_and_the_worker_goes_on(service: Service, tmp_path: Path) -> None:
    good = service.upload(write_rows(tmp_path / "good.csv", sentiment_rows(40)))
    one_class = service.upload(write_rows(tmp_path / "one.csv",
                                          sentiment_rows(20, labels=("positive",))))
    missing_model = service.submit({"task": "text-classification", "model": "no-such/model",
                                    "dataset": {"train": good["id"]}})
    bad_data = service.submit({"task": "text-classification", "model": TINY_MODEL,
                               "dataset": {"train": one_class["id"]}})
    after = service.submit({"task": "text-classification", "model": TINY_MODEL,
                            "dataset": {"train": good["id"]},
                            "hyperparameters": {"max_steps": 3}})
    failed = service.wait_for(missing_model["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "model_not_found"
    assert "no-such/model" in failed["error"]["message"] and failed["error"]["hint"]
    failed = service.wait_for(bad_data["id"])
    assert failed["error"]["code"] == "dataset_invalid"
    assert "one" in failed["error"]["message"].lower()
    assert service.wait_for(after["id"])["status"] == "succeeded"


def test_cancel_a_running_job(service: Service, tmp_path: Path) -> None:
    dataset = service.upload(write_rows(tmp_path / "d.csv", sentiment_rows(40)))
    job = service.submit(long_spec(dataset["id"]))
    service.wait_for(job["id"], ("running",), condition=lambda j: j["progress"]["step"] > 2)
    pid = trainer_pid(job["id"])
    assert pid is not None
    cancelling = service.client.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert cancelling["status"] in ("cancelling", "cancelled")
    cancelled = service.wait_for(job["id"], timeout=30)
    assert cancelled["status"] == "cancelled"
    assert cancelled["progress"]["step"] < 1_000_000
    assert not Path(f"/proc/{pid}").exists()
    kinds = [e["kind"] for e in service.client.get(f"/v1/jobs/{job['id']}/events").json()["data"]]
    assert "cancelling" in kinds and kinds[-1] == "cancelled"
    assert kinds.index("cancelling") < kinds.index("cancelled")


def test_raw_traversal_requests_never_leave_the_model(service: Service, tmp_path: Path) -> None:
    dataset = service.upload(write_rows(tmp_path / "d.csv", sentiment_rows(40)))
    job = service.submit({"task": "text-classification", "model": TINY_MODEL,
                          "dataset": {"train": dataset["id"]},
                          "hyperparameters": {"max_steps": 2}})
    assert service.wait_for(job["id"])["status"] == "succeeded"
    host, port = service.client.base_url.host, service.client.base_url.port
    for path in ("../trainer.log", "..%2Ftrainer.log", "%2e%2e%2ftrainer.log",
                 "..%2F..%2F..%2Fdatasets", "%2Fetc%2Fpasswd", "..\\trainer.log"):
        connection = http.client.HTTPConnection(host, port, timeout=10)
        # http.client sends the path as written: no client-side normalisation of '..'.
        connection.request("GET", f"/v1/jobs/{job['id']}/artifacts/{path}")
        response = connection.getresponse()
        assert response.status == 404, (path, response.status)
        assert b'"not_found"' in response.read()
        connection.close()
    assert (service.storage_dir / "jobs" / job["id"] / "trainer.log").is_file()

