"""The production path: PostgreSQL, Redis, and the API and a worker as separate processes."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import REDIS_URL, TINY_MODEL, postgres_database
from tests.e2e.flows import train_download_predict
from tests.e2e.service import Service, running_service, service_env, trainer_pid
from tests.factories import sentiment_rows, write_rows

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

REDIS_DB = 11


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, model_catalog: Path) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("production")
    broker = f"{REDIS_URL}/{REDIS_DB}"
    redis.Redis.from_url(broker).flushdb()
    with postgres_database() as database_url:
        settings = {"FT_DATABASE_URL": database_url, "FT_BROKER_URL": broker,
                    "FT_STORAGE_DIR": str(workdir / "storage"),
                    "FT_MODELS_DIR": str(model_catalog),
                    "FT_PROGRESS_INTERVAL_SECONDS": "0.2", "FT_CANCEL_GRACE_SECONDS": "5"}
        migrated = subprocess.run([sys.executable, "-m", "app.cli", "migrate"],
                                  env=service_env(settings), cwd=workdir, capture_output=True,
                                  text=True)
        assert migrated.returncode == 0, migrated.stderr
        with running_service(settings, workdir) as running:
            yield running


def long_spec(dataset_id: str) -> dict[str, Any]:
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


def test_a_killed_trainer_fails_the_job_not_the_worker(service: Service, tmp_path: Path) -> None:
    dataset = service.upload(write_rows(tmp_path / "d.csv", sentiment_rows(40)))
    job = service.submit(long_spec(dataset["id"]))
    service.wait_for(job["id"], ("running",), condition=lambda j: j["progress"]["step"] > 2)
    pid = trainer_pid(job["id"])
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    failed = service.wait_for(job["id"], timeout=60)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "worker_crashed"
    assert "SIGKILL" in failed["error"]["message"]
    event = service.client.get(f"/v1/jobs/{job['id']}/events").json()["data"][-1]
    assert event["kind"] == "failed" and isinstance(event["data"]["log_tail"], list)
    next_job = service.submit({"task": "text-classification", "model": TINY_MODEL,
                               "dataset": {"train": dataset["id"]},
                               "hyperparameters": {"max_steps": 2}})
    assert service.wait_for(next_job["id"])["status"] == "succeeded"


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


def test_worker_shutdown_requeues_the_running_job(service: Service, tmp_path: Path) -> None:
    dataset = service.upload(write_rows(tmp_path / "d.csv", sentiment_rows(40)))
    job = service.submit(long_spec(dataset["id"]))
    service.wait_for(job["id"], ("running",), condition=lambda j: j["progress"]["step"] > 2)
    pid = trainer_pid(job["id"])
    assert pid is not None
    service.worker.send_signal(signal.SIGTERM)  # a deploy stops the worker
    assert service.worker.wait(timeout=60) == 0
    assert not Path(f"/proc/{pid}").exists()
    requeued = service.client.get(f"/v1/jobs/{job['id']}").json()
    assert requeued["status"] == "queued"
    events = service.client.get(f"/v1/jobs/{job['id']}/events").json()["data"]
    assert events[-1]["kind"] == "interrupted"
    service.start_worker()  # the next worker takes the job again
    service.wait_for(job["id"], ("running",), condition=lambda j: j["progress"]["step"] > 0)
    assert service.client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    assert service.wait_for(job["id"], timeout=60)["status"] == "cancelled"
