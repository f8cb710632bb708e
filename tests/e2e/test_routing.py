"""Routing on a fleet of real workers (PostgreSQL, Redis): each declares a device type and
count, each job runs only on a worker that fits it, and a job for a type or a count nobody
offers waits in the queue saying so, until such a worker comes up. (A job on two devices
running on a worker that offers two: tests/e2e/test_distributed.py.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TINY_MODEL
from tests.e2e.service import Service, production_service
from tests.factories import sentiment_rows, write_rows

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

# The service's own worker offers one "small" device; every job here trains two steps.
SMALL = {"FT_WORKER_GPU_TYPE": "small", "FT_WORKER_GPUS": "1"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, model_catalog: Path) -> Iterator[Service]:
    with production_service(tmp_path_factory.mktemp("routing"), model_catalog,
                            FT_WORKER_HEARTBEAT_SECONDS="1", **SMALL) as running:
        yield running


def spec(dataset_id: str, **compute: Any) -> dict[str, Any]:
    return {"task": "text-classification", "model": TINY_MODEL,
            "dataset": {"train": dataset_id},
            "hyperparameters": {"max_steps": 2, "batch_size": 4}, "compute": compute}


def live_workers(service: Service, admin: dict[str, str], count: int) -> dict[str, str]:
    """The ids of the live workers by device type, once `count` of them are live."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        listed = service.client.get("/v1/workers", headers=admin)
        assert listed.status_code == 200, listed.text
        live = {w["gpu_type"]: w["id"] for w in listed.json()["data"]
                if w["status"] != "offline"}
        if len(live) == count:
            return live
        time.sleep(0.5)
    raise AssertionError(f"{count} workers did not come up: {listed.json()}")


def ran_on(service: Service, job_id: str) -> str:
    job = service.wait_for(job_id, timeout=180)
    assert job["status"] == "succeeded", job["error"]
    return job["attempts"][-1]["worker"]


def test_each_job_runs_on_a_worker_that_fits_it(service: Service, tmp_path: Path) -> None:
    admin = {"Authorization": f"Bearer {service.create_key('ops', admin=True)}"}
    service.add_worker("pair", FT_WORKER_GPU_TYPE="pair", FT_WORKER_GPUS="2")
    dataset = service.upload(write_rows(tmp_path / "train.csv", sentiment_rows(24)))
    # Nobody offers a "big" device, nor two "small" ones: both wait, saying so.
    big = service.submit(spec(dataset["id"], gpu_type="big"))
    two_small = service.submit(spec(dataset["id"], gpus=2, gpu_type="small"))
    workers = live_workers(service, admin, 2)
    small = service.submit(spec(dataset["id"], gpu_type="small"))
    pair = service.submit(spec(dataset["id"], gpu_type="pair"))

    assert ran_on(service, small["id"]) == workers["small"]
    assert ran_on(service, pair["id"]) == workers["pair"]
    for waiting, needs in ((big, "1 big devices"), (two_small, "2 small devices")):
        job = service.client.get(f"/v1/jobs/{waiting['id']}").json()
        assert job["status"] == "queued" and job["attempts"] == []
        assert job["waiting_for"]["reason"] == (f"no live worker offers {needs}; live workers "
                                                "offer: 1 small, 2 pair")
    checked = service.client.post("/v1/jobs/validate", json=spec(dataset["id"], gpu_type="big"))
    assert checked.status_code == 200, checked.text
    assert "no_worker_fits" in [w["code"] for w in checked.json()["report"]["warnings"]]

    service.add_worker("big", FT_WORKER_GPU_TYPE="big", FT_WORKER_GPUS="1")
    workers = live_workers(service, admin, 3)
    assert ran_on(service, big["id"]) == workers["big"]
    assert service.client.get(f"/v1/jobs/{two_small['id']}").json()["status"] == "queued"
    assert service.client.post(f"/v1/jobs/{two_small['id']}/cancel").status_code == 200
