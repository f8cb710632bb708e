"""The worker registry through the API: GET /v1/workers (admins only, paged, offline workers
told apart) and a queued job's `waiting_for` when no live worker serves its class. Rows are
written by the worker's own Registration, or placed as a worker of another machine would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.broker import job_queue, worker_queues
from app.config import Settings
from tests.api.helpers import (
    GIB,
    assert_error,
    job_spec,
    place_worker,
    sentiment_dataset,
    start_job,
)
from tests.conftest import create_key
from worker.registry import Offer, Registration, slug


@pytest.fixture
def admin(api: TestClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_key(api.app, 'ops', admin=True)}"}


def workers(api: TestClient, admin: dict[str, str], **params: Any) -> dict[str, Any]:
    response = api.get("/v1/workers", headers=admin, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_worker_consumes_the_queues_of_every_class_it_fits() -> None:
    assert job_queue(2, "h100") == "jobs.h100.2" and job_queue(1, None) == "jobs.any.1"
    assert worker_queues("h100", 2) == ["jobs.h100.1", "jobs.any.1", "jobs.h100.2",
                                        "jobs.any.2"]
    assert slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def test_only_an_admin_lists_the_workers(api: TestClient) -> None:
    assert_error(api.get("/v1/workers"), 403, "admin_required")


def test_the_registry_follows_a_worker_from_start_to_shutdown(
        api: TestClient, admin: dict[str, str]) -> None:
    registration = Registration(api.app.state.settings, api.app.state.session_factory,
                                Offer(gpu_type="a100-80gb", gpus=2, gpu_memory_bytes=80 * GIB))
    registration.start()
    try:
        [listed] = workers(api, admin)["data"]
        assert listed["id"] == registration.id and listed["status"] == "idle"
        assert (listed["gpu_type"], listed["gpus"], listed["gpu_memory_bytes"]) == (
            "a100-80gb", 2, 80 * GIB)
        assert listed["queues"] == worker_queues("a100-80gb", 2)
        registration.busy("job_x")
        [listed] = workers(api, admin)["data"]
        assert (listed["status"], listed["job_id"]) == ("busy", "job_x")
        registration.idle()
        [listed] = workers(api, admin)["data"]
        assert (listed["status"], listed["job_id"]) == ("idle", None)
    finally:
        registration.stop()
    assert workers(api, admin) == {"data": [], "has_more": False}


def test_a_silent_worker_is_offline_and_the_list_pages(
        api: TestClient, admin: dict[str, str]) -> None:
    place_worker(api, "gpu-a:10", "h100", 8, job_id="job_1")
    place_worker(api, "gpu-b:11", "h100", 8, silent_seconds=31)  # 3 heartbeats of 10 s
    place_worker(api, "cpu-c:12", "cpu", 1)
    first = workers(api, admin, limit=2)
    assert [w["id"] for w in first["data"]] == ["cpu-c:12", "gpu-a:10"] and first["has_more"]
    assert [w["status"] for w in first["data"]] == ["idle", "busy"]
    rest = workers(api, admin, limit=2, after="gpu-a:10")
    assert [(w["id"], w["status"], w["job_id"]) for w in rest["data"]] == [
        ("gpu-b:11", "offline", None)]
    assert not rest["has_more"]
    assert_error(api.get("/v1/workers", headers=admin, params={"after": "gone:1"}), 422,
                 "invalid_request", "after")


def test_a_queued_job_says_which_worker_it_waits_for(api: TestClient, tmp_path: Path) -> None:
    dataset = sentiment_dataset(api, tmp_path)
    created = api.post("/v1/jobs", json=job_spec(
        dataset["id"], compute={"gpus": 2, "gpu_type": "h100"}))
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["waiting_for"] == {"gpus": 2, "gpu_type": "h100",
                                  "reason": "no live worker offers 2 h100 devices; no worker "
                                            "is live"}
    place_worker(api, "gpu-a:10", "h100", 1)  # the type, too few devices
    place_worker(api, "gpu-b:11", "h100", 8, silent_seconds=60)  # fits, but offline
    waiting = api.get(f"/v1/jobs/{job['id']}").json()["waiting_for"]
    assert waiting["reason"] == ("no live worker offers 2 h100 devices; live workers offer: "
                                 "1 h100")
    listed = api.get("/v1/jobs", params={"status": "queued"}).json()["data"]
    assert [j["waiting_for"] for j in listed if j["id"] == job["id"]] == [waiting]

    place_worker(api, "gpu-c:12", "h100", 4)
    assert api.get(f"/v1/jobs/{job['id']}").json()["waiting_for"] is None
    any_type = api.post("/v1/jobs", json=job_spec(dataset["id"], compute={"gpus": 3})).json()
    assert any_type["waiting_for"] is None  # four h100 devices run a job of any type
    start_job(api, job["id"])
    place_worker(api, "gpu-d:13", "cpu", 1)
    big = api.post("/v1/jobs", json=job_spec(dataset["id"], compute={"gpus": 5})).json()
    assert big["waiting_for"]["reason"] == ("no live worker offers 5 devices (any type); live "
                                            "workers offer: 1 cpu, 1 h100, 4 h100")
    # Only a queued job waits.
    assert api.get(f"/v1/jobs/{job['id']}").json()["waiting_for"] is None


@pytest.mark.parametrize("gpu_type", ["H100", "a100 80gb", "-cpu", "x" * 41])
def test_a_worker_gpu_type_outside_the_job_spec_s_names_is_refused(gpu_type: str) -> None:
    with pytest.raises(ValidationError, match="worker_gpu_type"):
        Settings(worker_gpu_type=gpu_type)
