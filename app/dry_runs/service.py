"""Dry runs: a job spec checked by a worker without being run (POST /v1/jobs/validate).

The database carries both the request and the answer, never the broker: a worker's Celery
pool is busy for hours while a job trains, so dry runs are served from this table by every
worker's dry-run process (worker/dry_runs.py). The API inserts a pending row, commits, and
polls it until the report is there or its wait is over; then the client polls by id.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.auth import Caller
from app.config import Settings
from app.db import transaction
from app.errors import NotFound
from app.jobs.dataset_fields import with_dataset_fields
from app.jobs.service import check_datasets, check_server_caps
from app.jobs.spec import SPEC_VERSION, JobSpec
from app.models import Dataset, DryRun, utcnow
from app.workers.schemas import WaitingFor
from app.workers.service import live_workers, unserved

PENDING, RUNNING, DONE = "pending", "running", "done"
# Between two reads of a waiting dry run: short, as the answer takes seconds.
POLL_SECONDS = 0.1


def submit(session_factory: sessionmaker[Session], caller: Caller, spec: JobSpec,
           settings: Settings) -> tuple[DryRun, WaitingFor | None]:
    """Store a dry run of `spec` after the checks a job submit makes, and wait for its report
    up to FT_DRY_RUN_WAIT_SECONDS; answers the row, done or not, and what the job would wait
    for in the queue (no live worker serves its class)."""
    # Its own committed transaction: the workers must see the row while the request waits.
    with transaction(session_factory) as session:
        spec = with_dataset_fields(session, caller, spec).resolved()
        check_server_caps(spec, settings)
        check_datasets(session, caller, spec)
        dry_run = DryRun(project_id=caller.project_id, spec=spec.model_dump(mode="json"),
                         status=PENDING)
        session.add(dry_run)
        session.flush()
        dry_run_id = dry_run.id
    dry_run = _wait(session_factory, dry_run_id, settings.dry_run_wait_seconds)
    with session_factory() as session:
        return dry_run, _unserved(session, settings, dry_run)


def _wait(session_factory: sessionmaker[Session], dry_run_id: str, seconds: float) -> DryRun:
    deadline = time.monotonic() + seconds
    while True:
        with session_factory() as session:
            dry_run = session.get_one(DryRun, dry_run_id)
        if dry_run.status == DONE or time.monotonic() >= deadline:
            return dry_run
        time.sleep(POLL_SECONDS)


def get(session: Session, caller: Caller, dry_run_id: str,
        settings: Settings) -> tuple[DryRun, WaitingFor | None]:
    """A dry run of the caller's, and what its job would wait for in the queue."""
    dry_run = session.get(DryRun, dry_run_id)
    if dry_run is None or not caller.sees(dry_run.project_id):
        raise NotFound(f"no dry run with id {dry_run_id}", param="dry_run_id")
    return dry_run, _unserved(session, settings, dry_run)


def claim_next(session: Session, owner: str, stale_seconds: float) -> DryRun | None:
    """The oldest pending dry run, or one whose claim is older than `stale_seconds` (its
    worker died), now claimed by `owner`; None when there is none or another worker won."""
    now = utcnow()
    candidate = session.scalars(
        select(DryRun).where(or_(
            DryRun.status == PENDING,
            and_(DryRun.status == RUNNING,
                 DryRun.claimed_at < now - timedelta(seconds=stale_seconds))))
        .order_by(DryRun.created_at).limit(1)).first()
    if candidate is None:
        return None
    seen_claim = (DryRun.claimed_at.is_(None) if candidate.claimed_at is None
                  else DryRun.claimed_at == candidate.claimed_at)
    result = session.execute(
        update(DryRun).where(DryRun.id == candidate.id, DryRun.status == candidate.status,
                             seen_claim)
        .values(status=RUNNING, claim_owner=owner, claimed_at=now, updated_at=now)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    session.refresh(candidate)
    return candidate


def finish(session: Session, dry_run_id: str, owner: str, report: dict[str, Any]) -> bool:
    """Store the report, unless the claim was taken over meanwhile; False then."""
    result = session.execute(
        update(DryRun).where(DryRun.id == dry_run_id, DryRun.status == RUNNING,
                             DryRun.claim_owner == owner)
        .values(status=DONE, result=report, updated_at=utcnow())
        .execution_options(synchronize_session=False))
    return result.rowcount == 1  # type: ignore[attr-defined]


def _unserved(session: Session, settings: Settings, dry_run: DryRun) -> WaitingFor | None:
    """What the dry run's job would wait for in the queue, if no live worker can run it now.

    An empty registry says nothing: a worker answered the dry run, one that does not register
    (a release from before the registry, during a rolling deploy)."""
    live = live_workers(session, settings.worker_heartbeat_seconds)
    if not live:
        return None
    return unserved(JobSpec.from_stored(dry_run.spec, SPEC_VERSION).compute, live)


def dataset_columns(session: Session, spec: JobSpec) -> dict[str, list[str]]:
    """The columns of each uploaded dataset the spec reads, by role."""
    found = {}
    for role, dataset_id in spec.dataset.uploaded_ids().items():
        dataset = session.get(Dataset, dataset_id)
        if dataset is not None:
            found[role] = [column["name"] for column in dataset.columns]
    return found
