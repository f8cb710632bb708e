"""Out of memory: each attempt's successor trains with a smaller per-device batch and more
gradient accumulation, then gradient checkpointing, until nothing is left to shrink; the
attempts record what they ran with. Driven the way the worker drives it, with no worker."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from app.jobs import attempt_settings, lifecycle
from app.jobs.attempt_settings import AttemptSettings
from app.jobs.schemas import JobOut
from app.jobs.spec import JobSpec
from app.models import JobAttempt, JobEvent, JobStatus, new_id
from tests.conftest import TINY_MODEL
from tests.lifecycle.conftest import Jobs


def out_of_memory(jobs: Jobs, lease: lifecycle.Lease) -> bool:
    return jobs.do(lambda session: lifecycle.retry(
        session, lease, outcome="out_of_memory", code="out_of_memory",
        message="out of GPU memory: CUDA out of memory", runtime_seconds=1.0,
        log_tail=[], enqueue=jobs.enqueue))


def attempts(jobs: Jobs, job_id: str) -> list[JobAttempt]:
    with jobs.db() as session:
        return list(session.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id)
                                    .order_by(JobAttempt.number)))


def events(jobs: Jobs, job_id: str, kind: str) -> list[JobEvent]:
    with jobs.db() as session:
        return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id,
                                                           JobEvent.kind == kind)
                                    .order_by(JobEvent.id)))


def ran_with(attempt: JobAttempt) -> tuple[int, int, bool]:
    settings = attempt.settings or {}
    return (settings["batch_size"], settings["gradient_accumulation_steps"],
            settings["gradient_checkpointing"])


def test_each_out_of_memory_attempt_halves_the_batch_then_checkpoints_then_fails(
        jobs: Jobs) -> None:
    lease = jobs.running(hyperparameters={"batch_size": 16})
    for _ in range(4):  # 16, 8, 4 and 2, each ending out of memory
        assert out_of_memory(jobs, lease)
        assert jobs.get(lease.job_id).status == JobStatus.QUEUED
        claimed = jobs.claim(lease.job_id)
        assert claimed is not None
        lease = claimed
    assert ran_with(attempts(jobs, lease.job_id)[-1]) == (1, 16, False)
    assert out_of_memory(jobs, lease)  # at batch 1: gradient checkpointing comes on
    last = jobs.claim(lease.job_id)
    assert last is not None
    assert out_of_memory(jobs, last)

    job = jobs.get(lease.job_id)
    assert job.status == JobStatus.FAILED and job.error_code == "out_of_memory"
    assert job.error_message == (
        "out of memory even with batch_size 1 x gradient_accumulation_steps 16, gradient "
        "checkpointing: the job does not fit this worker's memory, and nothing is left to "
        "shrink (last: out of GPU memory: CUDA out of memory)")
    hint = job.error_hint or ""
    for way in ("LoRA", "lora.quantization: 4bit", "max_seq_length` (now 128)", "larger GPU",
                "POST /v1/jobs/validate"):
        assert way in hint, way
    # Six attempts against the default max_attempts of 3: the shrinking has its own end.
    assert [ran_with(a) for a in attempts(jobs, lease.job_id)] == [
        (16, 1, False), (8, 2, False), (4, 4, False), (2, 8, False), (1, 16, False),
        (1, 16, True)]
    assert [a.outcome for a in attempts(jobs, lease.job_id)] == ["out_of_memory"] * 6
    changes = events(jobs, lease.job_id, "settings_changed")
    assert [(e.data["from"]["batch_size"], e.data["to"]["batch_size"]) for e in changes] == [
        (16, 8), (8, 4), (4, 2), (2, 1), (1, 1)]
    assert changes[0].message == (
        "Out of memory with batch_size 16 x gradient_accumulation_steps 1: the next attempt "
        "halves the per-device batch to 8 and raises the gradient accumulation to 2, resuming "
        "from the last checkpoint; the effective batch stays 16, and so do the optimizer "
        "steps and the learning-rate schedule")
    assert "turns on gradient checkpointing" in changes[-1].message
    assert jobs.kinds(lease.job_id)[-2:] == ["attempt_failed", "failed"]


def test_a_crash_after_a_shrink_keeps_the_smaller_settings_and_uses_an_attempt(
        jobs: Jobs) -> None:
    lease = jobs.running(max_attempts=1, hyperparameters={"batch_size": 4,
                                                          "gradient_accumulation_steps": 3})
    assert out_of_memory(jobs, lease)
    second = jobs.claim(lease.job_id)
    assert second is not None
    assert jobs.do(lambda session: lifecycle.interrupt(session, second, 1.0, jobs.enqueue))
    third = jobs.claim(lease.job_id)
    assert third is not None
    assert [ran_with(a) for a in attempts(jobs, lease.job_id)] == [
        (4, 3, False), (2, 6, False), (2, 6, False)]
    assert jobs.do(lambda session: lifecycle.retry(
        session, third, outcome="crashed", code="worker_crashed", message="SIGSEGV",
        runtime_seconds=1.0, log_tail=[], enqueue=jobs.enqueue))
    job = jobs.get(lease.job_id)
    # The crash is the one counted attempt of max_attempts 1.
    assert job.status == JobStatus.FAILED and job.error_code == "too_many_attempts"


def test_an_out_of_memory_attempt_of_a_job_being_cancelled_ends_it_cancelled(
        jobs: Jobs) -> None:
    lease = jobs.in_status(JobStatus.CANCELLING)
    assert out_of_memory(jobs, lease)
    assert jobs.get(lease.job_id).status == JobStatus.CANCELLED
    assert events(jobs, lease.job_id, "settings_changed") == []


@pytest.mark.parametrize(("batch", "accumulation", "sequence"), [
    (12, 1, [(6, 2), (3, 4), (1, 12)]),
    (10, 2, [(5, 4), (1, 20)]),
    (7, 1, [(1, 7)]),
])
def test_an_odd_batch_shrinks_by_a_divisor_and_keeps_the_effective_batch(
        batch: int, accumulation: int, sequence: list[tuple[int, int]]) -> None:
    settings: AttemptSettings | None = AttemptSettings(batch, accumulation, False)
    seen = []
    while settings is not None and not settings.gradient_checkpointing:
        settings = settings.smaller()
        assert settings is not None
        assert settings.effective_batch == batch * accumulation
        if not settings.gradient_checkpointing:
            seen.append((settings.batch_size, settings.gradient_accumulation_steps))
    assert seen == sequence


def test_the_hint_names_only_what_the_job_does_not_use_yet() -> None:
    spec = JobSpec.model_validate({
        "task": "text-classification", "model": TINY_MODEL, "dataset": {"train": new_id("ds")},
        "lora": {"quantization": "4bit"}, "hyperparameters": {"max_seq_length": 512}})
    hint = attempt_settings.exhausted_hint(spec)
    assert "LoRA" not in hint and "4bit" not in hint
    assert "max_seq_length` (now 512)" in hint and "POST /v1/jobs/validate" in hint


def test_the_job_object_shows_each_attempts_settings_and_resolved_compute(
        jobs: Jobs) -> None:
    lease = jobs.running(hyperparameters={"batch_size": 8}, compute={
        "gradient_checkpointing": True})
    compute: dict[str, Any] = {"device": "cpu", "precision": "fp32", "attention": "sdpa"}
    jobs.do(lambda session: attempt_settings.record_compute(
        session, lease.job_id, lease.attempt, compute))
    shown = JobOut.from_job(jobs.get(lease.job_id), attempts(jobs, lease.job_id), None)
    assert shown.attempts[0].settings == {"batch_size": 8, "gradient_accumulation_steps": 1,
                                          "gradient_checkpointing": True, "compute": compute}
    # With checkpointing already on, batch 1 is the last thing to try.
    assert AttemptSettings(1, 8, True).smaller() is None
