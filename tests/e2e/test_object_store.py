"""Machines that share nothing but PostgreSQL, Redis and an S3-compatible store.

The API and two workers of different declared types, each with its own empty local folder,
on a real S3 server (moto in server mode) reached through a gate that can shut: jobs that name
a type run on that worker, a job resumes on the other worker from the store's checkpoint
after its worker is killed, and training goes on through a short outage of the store.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TINY_MODEL, S3Server
from tests.e2e.service import Service, production_service, trainer_pid
from tests.factories import sentiment_rows, write_rows
from tests.storage.gate import Gate

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@dataclass
class Machines:
    service: Service
    gate: Gate
    s3: S3Server
    prefix: str
    folders: dict[str, Path]
    workers: dict[str, subprocess.Popen[bytes]]

    def objects(self, under: str) -> dict[str, str]:
        """Key (under the prefix) → the sha256 it carries, of every object under `under`."""
        client: Any = self.s3.client()
        listed = client.list_objects_v2(Bucket=self.s3.bucket, Prefix=f"{self.prefix}/{under}")
        return {item["Key"].removeprefix(f"{self.prefix}/"):
                client.head_object(Bucket=self.s3.bucket, Key=item["Key"])["Metadata"]["sha256"]
                for item in listed.get("Contents", [])}


@pytest.fixture(scope="module")
def machines(tmp_path_factory: pytest.TempPathFactory, model_catalog: Path,
             s3_server: S3Server) -> Iterator[Machines]:
    workdir = tmp_path_factory.mktemp("object-store")
    gate = Gate(s3_server.endpoint)
    url = s3_server.url()
    folders = {name: workdir / name for name in ("api", "worker-a", "worker-b")}

    def own_folder_and_type(name: str) -> dict[str, str]:
        return {"FT_STORAGE_DIR": str(folders[name]), "FT_WORKER_GPU_TYPE": f"type-{name[-1]}"}

    try:
        with production_service(workdir, model_catalog, FT_STORAGE_URL=url,
                                FT_S3_ENDPOINT_URL=gate.endpoint, FT_S3_REGION="us-east-1",
                                FT_STORAGE_DIR=str(folders["api"]),
                                worker_settings=own_folder_and_type("worker-a")) as service:
            workers = {"worker-a": service.worker,
                       "worker-b": service.add_worker("worker-b",
                                                      **own_folder_and_type("worker-b"))}
            yield Machines(service, gate, s3_server, url.rsplit("/", 1)[1], folders, workers)
    finally:
        gate.close()


@pytest.fixture(scope="module")
def dataset(machines: Machines, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("data")
    return machines.service.upload(write_rows(folder / "train.csv", sentiment_rows(64, seed=3)))


def spec(dataset_id: str, max_steps: int, **compute: str) -> dict[str, Any]:
    return {"task": "text-classification", "model": TINY_MODEL,
            "dataset": {"train": dataset_id, "validation_split": 0.25},
            "hyperparameters": {"max_steps": max_steps, "batch_size": 8, "learning_rate": 1e-3},
            "checkpoint_steps": 10, "logging_steps": 5, "compute": compute}


def at_step(minimum: int) -> Any:
    return lambda job: job["progress"]["step"] >= minimum


def events(service: Service, job_id: str) -> list[dict[str, Any]]:
    answer = service.client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000})
    return answer.json()["data"]


def running_on(machines: Machines, job_id: str) -> str:
    """The worker whose trainer runs the job: the folder its log is in."""
    pid = trainer_pid(job_id)
    assert pid is not None, "no trainer process for the job"
    log = Path(os.readlink(f"/proc/{pid}/fd/1"))
    return next(name for name, folder in machines.folders.items() if log.is_relative_to(folder))


def test_jobs_naming_a_type_run_on_that_worker_and_publish_to_the_store(
        machines: Machines, dataset: dict[str, Any]) -> None:
    service = machines.service
    jobs = {name: service.submit(spec(dataset["id"], max_steps=2, gpu_type=f"type-{name[-1]}"))
            for name in machines.workers}
    for name, job in jobs.items():
        finished = service.wait_for(job["id"], timeout=120)
        assert finished["status"] == "succeeded", finished["error"]
        # A worker's id is host:pid, and `finetune worker` keeps its pid when it starts.
        assert finished["attempts"][-1]["worker"].endswith(f":{machines.workers[name].pid}")
        assert f"jobs/{job['id']}/model.tar.gz" in machines.objects(f"jobs/{job['id']}/")


def test_a_killed_worker_s_job_resumes_on_the_other_from_the_store(
        machines: Machines, dataset: dict[str, Any], tmp_path: Path) -> None:
    service = machines.service
    job = service.submit(spec(dataset["id"], max_steps=30))
    service.wait_for(job["id"], ("running",), condition=at_step(15))
    victim = running_on(machines, job["id"])
    survivor = next(name for name in machines.workers if name != victim)
    service.worker = machines.workers[survivor]
    trainer = trainer_pid(job["id"])
    os.killpg(machines.workers[victim].pid, signal.SIGKILL)  # the machine is gone
    if trainer is not None:
        os.kill(trainer, signal.SIGKILL)

    finished = service.wait_for(job["id"], timeout=120)
    assert finished["status"] == "succeeded", finished["error"]
    assert finished["attempts"][0]["outcome"] == "lease_expired"
    resumed = next(e for e in events(service, job["id"]) if e["kind"] == "resumed")
    assert resumed["data"]["step"] >= 10
    # The survivor had nothing of the job: it resumed from the checkpoint in the store.
    assert (machines.folders[survivor] / "jobs" / job["id"] / "trainer.log").is_file()
    # The model is in the store, hash for hash, and the API serves it from there.
    stored = machines.objects(f"jobs/{job['id']}/model/")
    listed = service.client.get(f"/v1/jobs/{job['id']}/artifacts").json()["data"]
    assert stored == {f"jobs/{job['id']}/model/{a['path']}": a["sha256"] for a in listed}
    assert not (machines.folders["api"] / "jobs").exists()
    model = service.download_model(job["id"], tmp_path)
    assert (model / "config.json").is_file()
    assert hashlib.sha256((model / "config.json").read_bytes()).hexdigest() == \
        stored[f"jobs/{job['id']}/model/config.json"]


def test_training_goes_on_through_a_short_outage_of_the_store(
        machines: Machines, dataset: dict[str, Any]) -> None:
    service = machines.service
    job = service.submit(spec(dataset["id"], max_steps=30))
    service.wait_for(job["id"], ("running",), condition=at_step(6))
    machines.gate.shut()  # the checkpoint at step 10 waits for the store to come back
    time.sleep(8)
    machines.gate.open()
    finished = service.wait_for(job["id"], timeout=120)
    assert finished["status"] == "succeeded", finished["error"]
    assert [a["outcome"] for a in finished["attempts"]] == ["succeeded"]
    logs = "".join(path.read_text() for folder in machines.folders.values()
                   for path in folder.glob(f"jobs/{job['id']}/trainer.log"))
    assert "could not be reached while uploading" in logs  # the outage did meet a checkpoint
    # Every checkpoint still recorded is whole in the store.
    checkpoints = {e["data"]["step"] for e in events(service, job["id"])
                   if e["kind"] == "checkpoint"}
    stored = machines.objects(f"jobs/{job['id']}/checkpoints/")
    kept = {int(key.split("/")[3].removeprefix("step-")) for key in stored}
    assert kept and kept <= checkpoints
    assert all(f"jobs/{job['id']}/checkpoints/step-{step}/model.safetensors" in stored
               for step in kept)
