"""Fault injection on the real parts: PostgreSQL, Redis, worker processes, tiny models.

Every wait is bounded; a job that does not reach its state in time fails the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.broker import RUN_JOB, create_celery
from tests.conftest import TINY_MODEL
from tests.e2e.service import Service, production_service, trainer_pid
from tests.factories import sentiment_rows, write_rows

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, model_catalog: Path) -> Iterator[Service]:
    with production_service(tmp_path_factory.mktemp("durability"), model_catalog) as running:
        yield running


@pytest.fixture(scope="module")
def dataset(service: Service, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("data")
    return service.upload(write_rows(folder / "train.csv", sentiment_rows(64, seed=3)))


def resumable_spec(dataset_id: str, **overrides: Any) -> dict[str, Any]:
    """Long enough to be killed halfway, with a checkpoint every 10 steps."""
    spec: dict[str, Any] = {
        "task": "text-classification", "model": TINY_MODEL,
        "dataset": {"train": dataset_id, "validation_split": 0.25},
        "hyperparameters": {"max_steps": 90, "batch_size": 8, "learning_rate": 1e-3},
        "evaluation": {"strategy": "steps", "steps": 30}, "checkpoint_steps": 10,
        "logging_steps": 5}
    spec.update(overrides)
    return spec


def at_step(minimum: int) -> Any:
    return lambda job: job["progress"]["step"] >= minimum


def kinds(service: Service, job_id: str) -> list[str]:
    events = service.client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000})
    return [event["kind"] for event in events.json()["data"]]


def wait_for_trainer(job_id: str, not_one_of: set[int]) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pid = trainer_pid(job_id)
        if pid is not None and pid not in not_one_of:
            return pid
        time.sleep(0.2)
    raise AssertionError(f"no new trainer process for {job_id}")


def kill_trainer(job_id: str) -> None:
    pid = trainer_pid(job_id)
    assert pid is not None, "no trainer process for the job"
    os.kill(pid, signal.SIGKILL)


def test_killed_trainer_resumes_and_ends_as_if_uninterrupted(service: Service,
                                                             dataset: dict[str, Any]) -> None:
    reference = service.submit(resumable_spec(dataset["id"], name="uninterrupted"))
    reference = service.wait_for(reference["id"])
    assert reference["status"] == "succeeded", reference["error"]

    job = service.submit(resumable_spec(dataset["id"], name="killed at half"))
    service.wait_for(job["id"], ("running",), condition=at_step(45))
    kill_trainer(job["id"])
    finished = service.wait_for(job["id"])
    assert finished["status"] == "succeeded", finished["error"]
    assert [a["outcome"] for a in finished["attempts"]] == ["killed", "succeeded"]
    assert "resumed" in kinds(service, job["id"])
    expected, got = reference["metrics"]["final"], finished["metrics"]["final"]
    assert abs(got["eval_loss"] - expected["eval_loss"]) < 1e-4, (got, expected)
    assert got["eval_accuracy"] == expected["eval_accuracy"]
    # The loss curve continues from the checkpoint instead of starting again from zero.
    series = service.client.get(f"/v1/jobs/{job['id']}/metrics").json()["series"]["loss"]
    steps = [point["step"] for point in series]
    assert steps == sorted(set(steps)) and steps[-1] == 90


def test_attempts_are_capped(service: Service, dataset: dict[str, Any]) -> None:
    job = service.submit(resumable_spec(dataset["id"], max_attempts=2,
                                        hyperparameters={"max_steps": 100_000}))
    killed: set[int] = set()
    for attempt in (1, 2):
        service.wait_for(job["id"], ("running",),
                         condition=lambda j, n=attempt: len(j["attempts"]) == n)
        pid = wait_for_trainer(job["id"], not_one_of=killed)
        os.kill(pid, signal.SIGKILL)
        killed.add(pid)
    failed = service.wait_for(job["id"], timeout=60)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "too_many_attempts"
    assert "attempt 1: killed" in failed["error"]["message"]
    assert [a["outcome"] for a in failed["attempts"]] == ["killed", "killed"]


def test_a_job_killed_with_its_worker_is_taken_back(service: Service,
                                                    dataset: dict[str, Any]) -> None:
    job = service.submit(resumable_spec(dataset["id"]))
    service.wait_for(job["id"], ("running",), condition=at_step(20))
    trainer = trainer_pid(job["id"])
    os.killpg(service.worker.pid, signal.SIGKILL)  # the whole worker machine is gone
    if trainer is not None:
        os.kill(trainer, signal.SIGKILL)
    service.worker.wait(timeout=10)
    service.start_worker()
    finished = service.wait_for(job["id"], timeout=120)
    assert finished["status"] == "succeeded", finished["error"]
    assert finished["attempts"][0]["outcome"] == "lease_expired"
    assert "lease_expired" in kinds(service, job["id"]) and "resumed" in kinds(service, job["id"])


def test_worker_shutdown_checkpoints_and_requeues(service: Service,
                                                  dataset: dict[str, Any]) -> None:
    # Long enough that the job cannot end on its own between step 25 and the stop, however
    # fast the machine trains.
    hyperparameters = {"max_steps": 300, "batch_size": 8, "learning_rate": 1e-3}
    job = service.submit(resumable_spec(dataset["id"], checkpoint_steps=1000,
                                        hyperparameters=hyperparameters))
    service.wait_for(job["id"], ("running",), condition=at_step(25))
    service.worker.send_signal(signal.SIGTERM)  # a deploy stops the worker
    assert service.worker.wait(timeout=60) == 0
    requeued = service.client.get(f"/v1/jobs/{job['id']}").json()
    assert requeued["status"] == "queued"
    assert requeued["attempts"][-1]["outcome"] == "interrupted"
    timeline = kinds(service, job["id"])
    assert timeline[-1] == "interrupted" and "checkpoint" in timeline[-3:]
    service.start_worker()
    finished = service.wait_for(job["id"], timeout=120)
    assert finished["status"] == "succeeded", finished["error"]
    assert "resumed" in kinds(service, job["id"])


def test_the_same_message_twice_runs_one_attempt(service: Service,
                                                 dataset: dict[str, Any]) -> None:
    job = service.submit(resumable_spec(dataset["id"], hyperparameters={"max_steps": 20}))
    celery = create_celery_for(service)
    celery.send_task(RUN_JOB, args=[job["id"]])
    celery.send_task(RUN_JOB, args=[job["id"]])
    finished = service.wait_for(job["id"])
    assert finished["status"] == "succeeded"
    time.sleep(2)  # the duplicates have been taken and dropped by now
    assert len(service.client.get(f"/v1/jobs/{job['id']}").json()["attempts"]) == 1


def test_timeout_saves_a_checkpoint_and_fails(service: Service, dataset: dict[str, Any]) -> None:
    job = service.submit(resumable_spec(dataset["id"], max_runtime_seconds=15,
                                        checkpoint_steps=100_000,
                                        hyperparameters={"max_steps": 100_000}))
    failed = service.wait_for(job["id"], timeout=90)
    assert failed["status"] == "failed" and failed["error"]["code"] == "timeout"
    assert failed["attempts"][-1]["outcome"] == "timeout"
    assert "checkpoint" in kinds(service, job["id"])


def test_queued_jobs_survive_a_redis_restart(service: Service, dataset: dict[str, Any]) -> None:
    running = service.submit(resumable_spec(dataset["id"], hyperparameters={"max_steps": 60}))
    queued = [service.submit(resumable_spec(dataset["id"], hyperparameters={"max_steps": 5}))
              for _ in range(2)]
    service.wait_for(running["id"], ("running",), condition=at_step(5))
    restart_redis()  # nothing persisted: the queued jobs' messages are gone
    assert service.wait_for(running["id"], timeout=120)["status"] == "succeeded"
    for job in queued:
        assert service.wait_for(job["id"], timeout=120)["status"] == "succeeded"
        assert "resent" in kinds(service, job["id"])


def test_training_goes_on_through_a_postgres_restart(service: Service,
                                                     dataset: dict[str, Any]) -> None:
    job = service.submit(resumable_spec(dataset["id"], hyperparameters={"max_steps": 150}))
    service.wait_for(job["id"], ("running",), condition=at_step(10))
    postgres("stop")
    try:
        down = service.client.get(f"/v1/jobs/{job['id']}")
        assert down.status_code == 503
        assert down.json()["error"]["code"] == "database_unavailable"
        time.sleep(2)
    finally:
        postgres("start")
    finished = wait_through_outage(service, job["id"])
    assert finished["status"] == "succeeded", finished["error"]


def wait_through_outage(service: Service, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        response = service.client.get(f"/v1/jobs/{job_id}")
        if response.status_code == 200 and response.json()["status"] in (
                "succeeded", "failed", "cancelled"):
            return response.json()
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish after the database restart")


def create_celery_for(service: Service) -> Any:
    from app.config import Settings

    return create_celery(Settings(broker_url=service.env["FT_BROKER_URL"]))


def restart_redis() -> None:
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "shutdown", "nosave"], timeout=30,
                   capture_output=True)
    subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1",
                    "--port", "6379", "--save", "", "--appendonly", "no",
                    "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log"],
                   check=True, timeout=30)
    deadline = time.monotonic() + 30
    while subprocess.run(["redis-cli", "-h", "127.0.0.1", "ping"],
                         capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "redis did not come back"
        time.sleep(0.2)


def postgres(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
                   check=True, timeout=60)


def test_a_damaged_latest_checkpoint_is_skipped(service: Service,
                                                dataset: dict[str, Any]) -> None:
    job = service.submit(resumable_spec(dataset["id"]))
    service.wait_for(job["id"], ("running",), condition=at_step(45))
    pid = trainer_pid(job["id"])
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # hold the trainer still while its checkpoint is damaged
    # The newest recorded checkpoint: its event commits with its record.
    events = service.client.get(f"/v1/jobs/{job['id']}/events", params={"limit": 1000})
    step = max(e["data"]["step"] for e in events.json()["data"] if e["kind"] == "checkpoint")
    latest = service.storage_dir / "jobs" / job["id"] / "work" / "checkpoints" / f"step-{step}"
    weights = latest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    os.kill(pid, signal.SIGKILL)
    finished = service.wait_for(job["id"])
    assert finished["status"] == "succeeded", finished["error"]
    events = service.client.get(f"/v1/jobs/{job['id']}/events", params={"limit": 1000})
    by_kind = {event["kind"]: event for event in events.json()["data"]}
    assert by_kind["checkpoint_skipped"]["data"]["step"] == step
    assert by_kind["resumed"]["data"]["step"] < by_kind["checkpoint_skipped"]["data"]["step"]


def test_a_job_submitted_while_the_broker_is_down_still_runs(service: Service,
                                                             dataset: dict[str, Any]) -> None:
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "shutdown", "nosave"], timeout=30)
    try:
        response = service.client.post("/v1/jobs", json=resumable_spec(
            dataset["id"], hyperparameters={"max_steps": 5}))
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "broker_unavailable"
        job_id = response.json()["error"]["message"].split()[1]
        assert service.client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
    finally:
        restart_redis()
    finished = service.wait_for(job_id, timeout=120)  # the reaper sends it again
    assert finished["status"] == "succeeded"
    assert "resent" in kinds(service, job_id)
