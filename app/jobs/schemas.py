from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.jobs.lifecycle import LEASED
from app.models import Job, JobAttempt, JobEvent, JobStatus
from app.workers.schemas import WaitingFor


class Progress(BaseModel):
    step: int
    total_steps: int | None
    epoch: float | None
    percent: float
    eta_seconds: float | None


class JobError(BaseModel):
    code: str
    message: str
    hint: str | None = None


class AttemptOut(BaseModel):
    number: int
    worker: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None
    error_code: str | None
    resumed_from_step: int | None
    last_step: int
    settings: dict[str, Any] | None = Field(
        description="What the attempt trained with: per-device batch_size, "
                    "gradient_accumulation_steps, gradient_checkpointing (an out-of-memory "
                    "attempt's successor shrinks them), and `compute`, the precision, attention "
                    "and device the trainer resolved; null for attempts older than this record")


class JobOut(BaseModel):
    id: str
    project_id: str
    submitted_by: str | None = Field(description="Prefix of the API key that submitted the job")
    name: str | None
    status: JobStatus
    spec: dict[str, Any]
    progress: Progress
    metrics: dict[str, Any]
    error: JobError | None
    attempts: list[AttemptOut]
    waiting_for: WaitingFor | None = Field(
        description="A queued job whose class (compute.gpus and compute.gpu_type) no live "
                    "worker serves: what it needs and what the workers offer. It starts when "
                    "such a worker comes up; null otherwise")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_job(cls, job: Job, attempts: list[JobAttempt], submitted_by: str | None,
                 waiting_for: WaitingFor | None = None) -> JobOut:
        percent = 100.0 if job.status == JobStatus.SUCCEEDED else (
            round(100.0 * job.step / job.total_steps, 2) if job.total_steps else 0.0)
        error = (JobError(code=job.error_code, message=job.error_message or "",
                          hint=job.error_hint) if job.error_code else None)
        return cls(
            id=job.id, project_id=job.project_id, submitted_by=submitted_by, name=job.name,
            status=job.status, spec=job.spec,
            progress=Progress(step=job.step, total_steps=job.total_steps, epoch=job.epoch,
                              percent=percent, eta_seconds=_eta(job)),
            metrics=job.metrics, error=error, created_at=job.created_at,
            attempts=[AttemptOut(number=a.number, worker=a.worker, started_at=a.started_at,
                                 ended_at=a.ended_at, outcome=a.outcome,
                                 error_code=a.error_code,
                                 resumed_from_step=a.resumed_from_step, last_step=a.last_step,
                                 settings=a.settings)
                      for a in attempts],
            waiting_for=waiting_for, started_at=job.started_at, finished_at=job.finished_at)


class EventOut(BaseModel):
    id: int
    kind: str
    message: str
    data: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_event(cls, event: JobEvent) -> EventOut:
        return cls(id=event.id, kind=event.kind, message=event.message, data=event.data,
                   created_at=event.created_at)


class EventPage(BaseModel):
    data: list[EventOut]
    has_more: bool


class MetricPointOut(BaseModel):
    step: int
    epoch: float | None
    value: float


class MetricsOut(BaseModel):
    job_id: str
    series: dict[str, list[MetricPointOut]]


def _eta(job: Job) -> float | None:
    # A job that stopped early never reaches its last estimate: only a running job has one.
    if job.status == JobStatus.SUCCEEDED:
        return 0.0
    return job.eta_seconds if job.status in LEASED else None
