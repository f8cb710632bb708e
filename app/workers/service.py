"""The worker registry as the API reads it: the fleet (GET /v1/workers), and whether a job's
class is served by a live worker. The workers write their own rows (worker/registry.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth import Caller
from app.broker import job_queue
from app.config import Settings
from app.errors import Forbidden, InvalidRequest
from app.jobs.run_spec import Compute
from app.jobs.spec import JobSpec
from app.memo import Remembered
from app.models import Job, JobStatus, Worker, utcnow
from app.workers.schemas import WaitingFor

# A worker is live while its last heartbeat is younger than this many intervals.
LIVE_INTERVALS = 3
_COMPUTE_OF_JOB: Remembered[str, Compute] = Remembered()


def live_since(heartbeat_seconds: float) -> datetime:
    """The oldest heartbeat of a live worker (FT_WORKER_HEARTBEAT_SECONDS)."""
    return utcnow() - timedelta(seconds=LIVE_INTERVALS * heartbeat_seconds)


def list_page(session: Session, caller: Caller, settings: Settings, limit: int,
              after: str | None) -> tuple[list[tuple[Worker, bool]], bool]:
    """Every registered worker by id, each with whether it is live; admins only."""
    if not caller.admin:
        raise Forbidden("only an admin key can list the workers", code="admin_required")
    statement = select(Worker).order_by(Worker.id).limit(limit + 1)
    if after is not None:
        if session.get(Worker, after) is None:
            raise InvalidRequest(f"'after' names no worker of this list: {after}",
                                 param="after")
        statement = statement.where(Worker.id > after)
    rows = list(session.scalars(statement))
    since = live_since(settings.worker_heartbeat_seconds)
    return [(worker, worker.heartbeat_at >= since) for worker in rows[:limit]], len(rows) > limit


def live_workers(session: Session, heartbeat_seconds: float) -> list[Worker]:
    return list(session.scalars(select(Worker)
                                .where(Worker.heartbeat_at >= live_since(heartbeat_seconds))
                                .order_by(Worker.id)))


def unserved(compute: Compute, live: list[Worker]) -> WaitingFor | None:
    """What `compute` asks for, when no live worker consumes its queue; None when one does."""
    queue = job_queue(compute.gpus, compute.gpu_type)
    if any(queue in worker.queues for worker in live):
        return None
    devices = f"{compute.gpu_type} devices" if compute.gpu_type else "devices (any type)"
    offers = sorted({f"{worker.gpus} {worker.gpu_type}" for worker in live})
    fleet = f"live workers offer: {', '.join(offers)}" if offers else "no worker is live"
    return WaitingFor(gpus=compute.gpus, gpu_type=compute.gpu_type,
                      reason=f"no live worker offers {compute.gpus} {devices}; {fleet}")


def waiting_for(session: Session, settings: Settings, jobs: list[Job]) -> dict[str, WaitingFor]:
    """The queued jobs among `jobs` whose class no live worker serves, with what they need:
    one query of the registry for them all."""
    queued = [job for job in jobs if job.status == JobStatus.QUEUED]
    if not queued:
        return {}
    live = live_workers(session, settings.worker_heartbeat_seconds)
    found = {job.id: unserved(_compute_of(job), live) for job in queued}
    return {job_id: waiting for job_id, waiting in found.items() if waiting is not None}


def _compute_of(job: Job) -> Compute:
    """The job's `compute`. A job's spec never changes, and reading it whole is most of the
    cost of a polled queued job, so the process remembers what it read."""
    return _COMPUTE_OF_JOB.get(
        job.id, lambda: JobSpec.from_stored(job.spec, job.spec_version).compute)
