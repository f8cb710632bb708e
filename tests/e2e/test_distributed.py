"""A job on two ranks under the real worker: the supervisor starts torchrun, a rank killed
with SIGKILL fails the attempt and the next one resumes from the sharded checkpoint every
rank took part in, and a cancel stops every rank with no process left behind."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TINY_MODEL
from tests.e2e.service import Service, production_service
from tests.factories import sentiment_rows, write_rows

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, model_catalog: Path) -> Iterator[Service]:
    # A CPU worker offers one device unless told otherwise: this one takes 2-rank jobs.
    with production_service(tmp_path_factory.mktemp("distributed"), model_catalog,
                            FT_WORKER_GPUS="2") as running:
        yield running


def two_rank_spec(dataset_id: str, max_steps: int, distributed: str = "ddp") -> dict[str, Any]:
    return {"task": "text-classification", "model": TINY_MODEL,
            "dataset": {"train": dataset_id, "validation_split": 0.25},
            "hyperparameters": {"max_steps": max_steps, "batch_size": 4, "learning_rate": 1e-3},
            "compute": {"gpus": 2, "distributed": distributed}, "checkpoint_steps": 10,
            "logging_steps": 5}


def rank_pids(job_id: str) -> list[int]:
    """The trainer ranks of `job_id`: the runners writing its log, torchrun aside."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes()
            stdout = os.readlink(entry / "fd" / "1")
        except OSError:
            continue
        if (b"worker.runner" in argv and b"torch.distributed.run" not in argv
                and stdout.endswith(f"{job_id}/trainer.log")):
            found.append(int(entry.name))
    return found


def wait_for_ranks(job_id: str, count: int) -> list[int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(pids := rank_pids(job_id)) == count:
            return pids
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} does not have {count} ranks: {rank_pids(job_id)}")


def at_step(minimum: int) -> Any:
    return lambda job: job["progress"]["step"] >= minimum


def test_a_killed_rank_is_retried_from_the_sharded_checkpoint(service: Service,
                                                              tmp_path: Path) -> None:
    # FSDP: each rank's checkpoint holds only its shard, so a resume needs every rank's part.
    dataset = service.upload(write_rows(tmp_path / "train.csv", sentiment_rows(64, seed=3)))
    job = service.submit(two_rank_spec(dataset["id"], max_steps=60, distributed="fsdp"))
    service.wait_for(job["id"], ("running",), condition=at_step(25))
    os.kill(max(wait_for_ranks(job["id"], 2)), signal.SIGKILL)
    finished = service.wait_for(job["id"], timeout=400)
    assert finished["status"] == "succeeded", finished["error"]
    first, last = finished["attempts"][0], finished["attempts"][-1]
    assert first["outcome"] == "crashed" and last["outcome"] == "succeeded", finished["attempts"]
    assert last["settings"]["compute"]["ranks"] == 2
    assert last["settings"]["compute"]["distributed"] == "fsdp"
    assert last["settings"]["compute"]["effective_batch_size"] == 8
    events = service.client.get(f"/v1/jobs/{job['id']}/events",
                                params={"limit": 1000}).json()["data"]
    resumed = [event["data"]["step"] for event in events if event["kind"] == "resumed"]
    assert resumed and resumed[0] >= 20, events


def test_cancel_stops_every_rank(service: Service, tmp_path: Path) -> None:
    dataset = service.upload(write_rows(tmp_path / "train.csv", sentiment_rows(64, seed=4)))
    job = service.submit(two_rank_spec(dataset["id"], max_steps=100_000))
    service.wait_for(job["id"], ("running",), condition=at_step(5))
    ranks = wait_for_ranks(job["id"], 2)
    assert service.client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    assert service.wait_for(job["id"], timeout=60)["status"] == "cancelled"
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in ranks) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rank_pids(job["id"]) == []
