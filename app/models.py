"""ORM classes: projects and their API keys, datasets, jobs, their events, metrics, artifacts,
and the projects' webhook endpoints with their deliveries."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


# app/jobs/lifecycle.py holds every move between these, and is the only writer of Job.status.
class JobStatus(StrEnum):
    """Where a job stands: it starts queued; succeeded, failed and cancelled are final."""

    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobStatusType(TypeDecorator[JobStatus]):
    """A JobStatus stored as its value in a VARCHAR: a new state needs no migration."""

    impl = String(20)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return JobStatus(value).value if value is not None else None

    def process_result_value(self, value: str | None, dialect: Dialect) -> JobStatus | None:
        return JobStatus(value) if value is not None else None


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


# Rows made before projects existed belong to this one, and so does everything done while
# authentication is switched off (loopback only).
DEFAULT_PROJECT_ID = "proj_default"


class Project(Base):
    """A team's space: its keys see its datasets and jobs, and nothing of other projects."""

    __tablename__ = "project"

    id: Mapped[str] = mapped_column(String(40), primary_key=True,
                                    default=lambda: new_id("proj"))
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """A bearer key of a project; only the sha256 of the secret is kept."""

    __tablename__ = "api_key"

    id: Mapped[str] = mapped_column(String(40), primary_key=True,
                                    default=lambda: new_id("key"))
    # The key's readable start ("ftk_" and 8 characters): it names the key in listings.
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(ForeignKey("project.id"), index=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class Dataset(Base):
    __tablename__ = "dataset"

    id: Mapped[str] = mapped_column(String(40), primary_key=True,
                                    default=lambda: new_id("ds"))
    project_id: Mapped[str] = mapped_column(ForeignKey("project.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # The stored file's format, which the worker reads; an upload that no task reads as it is
    # (SQuAD JSON, Arrow) is stored converted, and `source_format` says what it was.
    format: Mapped[str] = mapped_column(String(16))
    source_format: Mapped[str] = mapped_column(String(16))
    # app/datasets/layouts.py, with what reading it counted (SQuAD's unanswerable questions).
    layout: Mapped[str] = mapped_column(String(32))
    layout_details: Mapped[dict[str, Any]] = mapped_column()
    filename: Mapped[str | None] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    num_rows: Mapped[int] = mapped_column(Integer)
    columns: Mapped[list[Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Job(Base):
    __tablename__ = "job"

    id: Mapped[str] = mapped_column(String(40), primary_key=True,
                                    default=lambda: new_id("job"))
    project_id: Mapped[str] = mapped_column(ForeignKey("project.id"), index=True)
    # The key that submitted the job; None when authentication is off.
    api_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_key.id"))
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[JobStatus] = mapped_column(JobStatusType(), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column()
    # The JobSpec version the spec was stored under: the worker upgrades older ones.
    spec_version: Mapped[int] = mapped_column(Integer, server_default="1")
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    epoch: Mapped[float | None] = mapped_column(Float)
    eta_seconds: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_hint: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(255))
    # The running attempt's number; every start of the trainer is an attempt.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    # Who runs the job and until when: a lease that is not renewed in time is taken back.
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(index=True)
    # When "run job X" was last sent: the reaper sends it again when this grows old.
    enqueued_at: Mapped[datetime | None] = mapped_column()
    # Training time used by all attempts so far, against max_runtime_seconds.
    runtime_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class JobDataset(Base):
    """Which datasets a job reads, so that a dataset in use cannot be deleted."""

    __tablename__ = "job_dataset"

    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"),
                                        primary_key=True)
    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("dataset.id"), index=True)


class JobEvent(Base):
    __tablename__ = "job_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MetricPoint(Base):
    __tablename__ = "metric_point"
    __table_args__ = (Index("ix_metric_point_job_id_step", "job_id", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[float | None] = mapped_column(Float)
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Artifact(Base):
    __tablename__ = "artifact"
    __table_args__ = (UniqueConstraint("job_id", "path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(String(1024))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobAttempt(Base):
    """One run of a job's trainer, from its start to its outcome."""

    __tablename__ = "job_attempt"
    __table_args__ = (UniqueConstraint("job_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()
    # succeeded, failed, crashed, killed, out_of_memory, timeout, cancelled, lease_expired,
    # interrupted; None while it runs.
    outcome: Mapped[str | None] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(64))
    resumed_from_step: Mapped[int | None] = mapped_column(Integer)
    last_step: Mapped[int] = mapped_column(Integer, default=0)
    # What it trained with: per-device batch_size, gradient_accumulation_steps and
    # gradient_checkpointing (set at its start: an out-of-memory attempt's successor shrinks
    # them), and `compute`, the precision and attention the trainer resolved.
    settings: Mapped[dict[str, Any] | None] = mapped_column()


class Checkpoint(Base):
    """A checkpoint the service wrote, with the sha256 of each file: nothing else is resumed."""

    __tablename__ = "checkpoint"
    __table_args__ = (UniqueConstraint("job_id", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    files: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyKey(Base):
    """A client's Idempotency-Key, stored in the same transaction as the object it made."""

    __tablename__ = "idempotency_key"
    __table_args__ = (UniqueConstraint("project_id", "scope", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Keys are per project: another project's key of the same value is another request.
    project_id: Mapped[str] = mapped_column(ForeignKey("project.id"))
    scope: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(255))
    request_sha256: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DryRun(Base):
    """A job spec checked by a worker without running it: POST /v1/jobs/validate."""

    __tablename__ = "dry_run"

    id: Mapped[str] = mapped_column(String(40), primary_key=True,
                                    default=lambda: new_id("dry"))
    project_id: Mapped[str] = mapped_column(ForeignKey("project.id"), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column()
    # pending, running (a worker claimed it), done (`result` holds the report).
    status: Mapped[str] = mapped_column(String(20), index=True)
    result: Mapped[dict[str, Any] | None] = mapped_column()
    # The worker computing it, and since when: a claim that grows old is taken over.
    claim_owner: Mapped[str | None] = mapped_column(String(255))
    claimed_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WebhookEndpoint(Base):
    """A project's URL that receives its jobs' events, signed as Standard Webhooks says."""

    __tablename__ = "webhook_endpoint"

    id: Mapped[str] = mapped_column(String(40), primary_key=True,
                                    default=lambda: new_id("wh"))
    project_id: Mapped[str] = mapped_column(ForeignKey("project.id"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    event_types: Mapped[list[Any]] = mapped_column()
    description: Mapped[str | None] = mapped_column(String(500))
    # "whsec_" and the base64 key: kept as it is, since every delivery is signed with it.
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeliveryStatus(StrEnum):
    """A webhook delivery: pending until delivered (succeeded) or given up (failed)."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WebhookDelivery(Base):
    """One event for one endpoint: the outbox row, written in the transaction that recorded
    the event, kept until it is delivered or given up; its id is the `webhook-id` header."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        Index("ix_webhook_delivery_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_webhook_delivery_endpoint_id_created_at", "endpoint_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True,
                                    default=lambda: new_id("msg"))
    endpoint_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_endpoint.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(ForeignKey("project.id"))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"),
                                               index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    # The JSON sent, byte for byte the same at every attempt (the signature covers it).
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # a DeliveryStatus
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    # A dispatcher sending it holds it until then; one that dies mid-send lets it go.
    claimed_until: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()


class WebhookAttempt(Base):
    """One try at sending a delivery: the answer's status or the error, and how long it took."""

    __tablename__ = "webhook_attempt"
    __table_args__ = (UniqueConstraint("delivery_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_delivery.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    # None until the attempt ends (or its dispatcher is found to have died).
    ended_at: Mapped[datetime | None] = mapped_column()
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    # The start of the receiver's answer, for the sender's debugging.
    response: Mapped[str | None] = mapped_column(Text)


class Worker(Base):
    """A worker process in the registry, written by its own heartbeat (worker/registry.py);
    one whose heartbeat is older than three intervals is offline."""

    __tablename__ = "worker"

    # host:pid, the owner its leases and job attempts record.
    id: Mapped[str] = mapped_column(String(300), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    gpu_type: Mapped[str] = mapped_column(String(40))
    gpus: Mapped[int] = mapped_column(Integer)
    # Per device: a GPU's memory, or the machine's for a CPU worker.
    gpu_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # The broker queues it consumes (app.broker.worker_queues).
    queues: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # idle | busy
    job_id: Mapped[str | None] = mapped_column(String(40))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
