"""The official `openai` SDK, unchanged, fine-tunes the tiny GPT-2 end to end against the real
service (PostgreSQL, Redis, the API and a worker as processes): upload, create, follow to
`succeeded`, events, checkpoints, the result file, the model by its native download, list with
auto-pagination, cancel, and the refusals."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from openai import OpenAI
from transformers import pipeline

from tests.conftest import TINY_GPT2
from tests.e2e.service import Service
from tests.layout_files import write_jsonl
from tests.openai_app import chats

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Running:
    service: Service
    client: OpenAI


@pytest.fixture(scope="module")
def running(service: Service) -> Iterator[Running]:
    with OpenAI(base_url=f"{service.client.base_url}/v1", api_key=service.api_key,
                max_retries=0) as client:
        yield Running(service, client)


def follow(client: OpenAI, job_id: str, timeout: float = 300) -> tuple[object, set[str]]:
    """Poll as an SDK user does, until the job ends; answers it and the statuses seen."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        seen.add(job.status)
        if job.status in TERMINAL:
            return job, seen
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not end in {timeout}s (statuses {seen})")


def test_the_sdk_fine_tunes_end_to_end(running: Running, tmp_path: Path) -> None:
    client = running.client
    with write_jsonl(tmp_path / "train.jsonl", chats(24)).open("rb") as train_file, \
            write_jsonl(tmp_path / "valid.jsonl", chats(8)).open("rb") as valid_file:
        train = client.files.create(file=train_file, purpose="fine-tune")
        valid = client.files.create(file=valid_file, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=TINY_GPT2, training_file=train.id, validation_file=valid.id, suffix="colours",
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 50}}},
        metadata={"test": "e2e"})
    assert job.status == "queued"

    finished, seen = follow(client, job.id)
    assert finished.status == "succeeded", finished.error
    assert seen <= {"queued", "running", "succeeded"}
    assert finished.fine_tuned_model == f"ft:{TINY_GPT2}:colours:{job.id}"
    assert finished.trained_tokens > 0 and finished.finished_at >= finished.created_at

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=10))
    assert events[0].message == "Job succeeded" and events[-1].message == "Job queued"
    losses = [event for event in events if event.message.startswith("Step ")]
    assert len(losses) == 6 and losses[0].message.startswith("Step 6/6: training loss=")
    evaluations = [event.data for event in events if event.type == "metrics"
                   and "valid_loss" in event.data]
    assert [data["step"] for data in evaluations] == [6, 3]

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [checkpoint.step_number for checkpoint in checkpoints] == [6, 3]  # one an epoch
    assert checkpoints[0].metrics.valid_loss == pytest.approx(evaluations[0]["valid_loss"])

    [result_id] = finished.result_files
    rows = list(csv.DictReader(io.StringIO(client.files.content(result_id).text)))
    assert [int(row["step"]) for row in rows] == [1, 2, 3, 4, 5, 6]
    assert all(float(row["train_loss"]) > 0 for row in rows)
    assert [row["valid_loss"] != "" for row in rows] == [False, False, True] * 2

    # The fine-tuned model's files: the native download of the same job.
    model = running.service.download_model(job.id, tmp_path / "download")
    [generated] = pipeline("text-generation", model=str(model))(
        [{"role": "user", "content": "what colour are cats ?"}], max_new_tokens=3)
    assert generated["generated_text"][-1]["role"] == "assistant"


def test_cancel_list_and_refusals(running: Running, tmp_path: Path) -> None:
    client = running.client
    with write_jsonl(tmp_path / "train.jsonl", chats(16)).open("rb") as stream:
        train = client.files.create(file=stream, purpose="fine-tune")
    # Long enough to be cancelled while it runs, or (the second) while it waits for the worker.
    jobs = [client.fine_tuning.jobs.create(
        model=TINY_GPT2, training_file=train.id, metadata={"batch": batch},
        hyperparameters={"n_epochs": 200, "batch_size": 4}) for batch in ("b", "c")]
    for job in jobs:
        client.fine_tuning.jobs.cancel(job.id)
    for job in jobs:
        cancelled, _ = follow(client, job.id)
        assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None

    listed = [job.id for job in client.fine_tuning.jobs.list(limit=1)]  # a page per job
    assert listed[:2] == [jobs[1].id, jobs[0].id]
    assert [job.id for job in client.fine_tuning.jobs.list(metadata={"batch": "c"})] \
        == [jobs[1].id]

    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-abc123")
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(model=TINY_GPT2, training_file=train.id,
                                       method={"type": "dpo"})
    assert "dpo" in refused.value.message and refused.value.code == "unsupported_method"
