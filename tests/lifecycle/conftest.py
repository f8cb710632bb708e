"""A migrated database of each kind, shared by the lifecycle tests, and jobs put in each
state through the lifecycle's own operations. No broker, no worker: `sent` records the job
ids the lifecycle asked to send."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app import migrate
from app.broker import worker_queues
from app.db import make_engine, make_session_factory, transaction
from app.jobs import lifecycle
from app.jobs.spec import SPEC_VERSION, JobSpec
from app.models import DEFAULT_PROJECT_ID, Job, JobEvent, JobStatus, Worker, new_id, utcnow
from tests.conftest import TINY_MODEL, postgres_database

LEASE_SECONDS = 60.0
WORKER = "host-a:1"


@pytest.fixture(scope="package",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[sessionmaker[Session]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('lifecycle') / 'jobs.sqlite'}"
        migrate.upgrade(url)
        yield from _factory(url)
        return
    with postgres_database() as url:
        migrate.upgrade(url)
        yield from _factory(url)


def _factory(url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


@dataclass
class Jobs:
    """Makes jobs and moves them with the lifecycle's operations, one transaction each."""

    db: sessionmaker[Session]
    sent: list[str] = field(default_factory=list)
    # The queue each job was last sent to.
    queues: dict[str, str] = field(default_factory=dict)

    def enqueue(self, job_id: str, queue: str) -> None:
        self.sent.append(job_id)
        self.queues[job_id] = queue

    def serve(self, gpu_type: str, gpus: int, worker_id: str = WORKER) -> None:
        """A live worker offering `gpus` devices of `gpu_type`, as its heartbeat writes it."""
        now = utcnow()
        with transaction(self.db) as session:
            session.merge(Worker(id=worker_id, host=worker_id.split(":")[0], pid=1,
                                 gpu_type=gpu_type, gpus=gpus, gpu_memory_bytes=None,
                                 queues=worker_queues(gpu_type, gpus), status="idle",
                                 started_at=now, heartbeat_at=now))

    def submit(self, **spec: Any) -> str:
        stored = JobSpec.model_validate({
            "task": "text-classification", "model": TINY_MODEL,
            "dataset": {"train": new_id("ds")}, **spec}).model_dump(mode="json")
        with transaction(self.db) as session:
            job = lifecycle.submit(session, Job(
                id=new_id("job"), project_id=DEFAULT_PROJECT_ID, spec=stored,
                spec_version=SPEC_VERSION, metrics={}), self.enqueue, {})
            return job.id

    def claim(self, job_id: str, owner: str = WORKER) -> lifecycle.Lease | None:
        with transaction(self.db) as session:
            return lifecycle.claim(session, job_id, owner, owner.split(":")[0], LEASE_SECONDS)

    def running(self, **spec: Any) -> lifecycle.Lease:
        lease = self.claim(self.submit(**spec))
        assert lease is not None
        return lease

    def in_status(self, status: JobStatus, **spec: Any) -> lifecycle.Lease:
        """A job in `status`, reached the way the service reaches it, and the lease of its
        last attempt (attempt 0 and no owner for a job that never started)."""
        if status in (JobStatus.QUEUED, JobStatus.CANCELLED):
            job_id = self.submit(**spec)
            if status == JobStatus.CANCELLED:
                self.do(lambda session: lifecycle.cancel(session, job_id))
            return lifecycle.Lease(job_id, "", 0)
        lease = self.running(**spec)
        moves = {
            JobStatus.RUNNING: None,
            JobStatus.CANCELLING: lambda session: lifecycle.cancel(session, lease.job_id),
            JobStatus.SUCCEEDED: lambda session: lifecycle.succeed(session, lease, {}, 1.0),
            JobStatus.FAILED: lambda session: lifecycle.fail(session, lease, "invalid_spec",
                                                             "no"),
        }
        move = moves[status]
        if move is not None:
            assert self.do(move)
        return lease

    def do(self, operation: Any) -> Any:
        with transaction(self.db) as session:
            return operation(session)

    def get(self, job_id: str) -> Job:
        with self.db() as session:
            job = session.get(Job, job_id)
            assert job is not None
            return job

    def row(self, job_id: str) -> dict[str, Any]:
        with self.db() as session:
            return dict(session.execute(select(Job.__table__).where(Job.id == job_id))
                        .mappings().one())

    def kinds(self, job_id: str) -> list[str]:
        with self.db() as session:
            return list(session.scalars(select(JobEvent.kind).where(JobEvent.job_id == job_id)
                                        .order_by(JobEvent.id)))

    def expire_lease(self, job_id: str) -> None:
        """What time does to a lease nobody renews: only the expiry moves, never the status."""
        with transaction(self.db) as session:
            session.execute(update(Job).where(Job.id == job_id)
                            .values(lease_expires_at=utcnow() - timedelta(seconds=1)))

    def age(self, job_id: str, seconds: float) -> None:
        """As if the job had been submitted `seconds` ago."""
        with transaction(self.db) as session:
            session.execute(update(Job).where(Job.id == job_id).values(
                created_at=utcnow() - timedelta(seconds=seconds),
                enqueued_at=utcnow() - timedelta(seconds=seconds)))


@pytest.fixture
def jobs(db: sessionmaker[Session]) -> Jobs:
    return Jobs(db)
