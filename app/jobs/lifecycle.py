"""The worker side of the job lifecycle: claims, leases, attempts, retries and the reaper.

Every change of status is a conditional UPDATE (`jobs.transition`), so two workers never
run one job at once and a late message, a late reaper or a late worker does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db import after_commit
from app.error_codes import hint_for
from app.jobs.service import add_event, transition
from app.models import Job, JobAttempt, utcnow

Enqueue = Callable[[str], None]

# Outcomes that use up one of the job's max_attempts; an interrupted attempt (a worker's
# shutdown) does not: a deploy must never fail a job.
COUNTED_OUTCOMES = ("crashed", "killed", "out_of_memory", "lease_expired")


def claim(session: Session, job_id: str, owner: str, host: str,
          lease_seconds: float) -> JobAttempt | None:
    """queued -> running with a fresh lease and a new attempt; None when another actor won."""
    now = utcnow()
    job = session.get(Job, job_id)
    if job is None or not transition(
            session, job_id, expected=("queued",), to="running", worker=host,
            attempt=job.attempt + 1, lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=job.started_at or now):
        return None
    attempt = JobAttempt(job_id=job_id, number=job.attempt + 1, worker=host, started_at=now)
    session.add(attempt)
    add_event(session, job_id, "started", f"Attempt {attempt.number} started on {host}",
              {"attempt": attempt.number, "worker": host})
    session.flush()
    return attempt


def renew_lease(session: Session, job_id: str, owner: str, lease_seconds: float) -> bool:
    """False when the job is no longer ours: the trainer must stop at once."""
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.lease_owner == owner,
                          Job.status.in_(("running", "cancelling")))
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False))
    return result.rowcount == 1  # type: ignore[attr-defined]


def end_attempt(session: Session, job_id: str, number: int, outcome: str, *,
                error_code: str | None = None, runtime_seconds: float = 0.0) -> None:
    attempt = session.scalars(select(JobAttempt).where(
        JobAttempt.job_id == job_id, JobAttempt.number == number)).one()
    job = session.get(Job, job_id)
    attempt.outcome, attempt.error_code, attempt.ended_at = outcome, error_code, utcnow()
    if job is not None:
        attempt.last_step = job.step
        job.runtime_seconds += runtime_seconds


def send(session: Session, job_id: str, enqueue: Enqueue) -> None:
    """Send "run job X" once the transaction commits, and remember when."""
    session.execute(update(Job).where(Job.id == job_id).values(enqueued_at=utcnow())
                    .execution_options(synchronize_session=False))
    after_commit(session, lambda: enqueue(job_id))


def requeue(session: Session, job_id: str, *, expected: tuple[str, ...], kind: str,
            message: str, enqueue: Enqueue) -> bool:
    if not transition(session, job_id, expected=expected, to="queued", lease_owner=None,
                      lease_expires_at=None, eta_seconds=None):
        return False
    add_event(session, job_id, kind, message)
    send(session, job_id, enqueue)
    return True


def retry_or_fail(session: Session, job_id: str, *, code: str, message: str,
                  expected: tuple[str, ...], enqueue: Enqueue) -> None:
    """After a failure that another attempt may fix: queue again, or fail past max_attempts."""
    job = session.get(Job, job_id)
    if job is None:
        return
    attempts = list(session.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id)
                                    .order_by(JobAttempt.number)))
    used = sum(1 for attempt in attempts if attempt.outcome in COUNTED_OUTCOMES)
    allowed = job.spec.get("max_attempts", 3)
    if used < allowed:
        requeue(session, job_id, expected=expected, kind="retrying",
                message=f"{message}; attempt {used} of {allowed} failed, the job is queued "
                        "again and resumes from its last checkpoint", enqueue=enqueue)
        return
    history = "; ".join(f"attempt {a.number}: {a.outcome}" for a in attempts if a.outcome)
    if transition(session, job_id, expected=expected, to="failed",
                  error_code="too_many_attempts",
                  error_message=f"all {allowed} attempts failed ({history}); last: {message}",
                  error_hint=hint_for("too_many_attempts"), lease_owner=None):
        add_event(session, job_id, "failed", f"all {allowed} attempts failed",
                  {"code": "too_many_attempts", "last_error": code, "attempts": history})


def reap(session: Session, *, resend_after_seconds: float, enqueue: Enqueue) -> None:
    """Take back jobs whose lease expired, re-send queued jobs that never started, and fail
    queued jobs past their max_queue_seconds. Safe to run in every worker at once."""
    now = utcnow()
    expired = session.scalars(select(Job).where(
        Job.status.in_(("running", "cancelling")), Job.lease_expires_at < now)).all()
    for job in expired:
        _take_back(session, job, enqueue)
    stale = now - timedelta(seconds=resend_after_seconds)
    queued = select(Job).where(Job.status == "queued").execution_options(populate_existing=True)
    for job in session.scalars(queued).all():
        max_queue = job.spec.get("max_queue_seconds")
        # Only a job that never started: a requeued one has been admitted already.
        if max_queue and job.attempt == 0 and job.created_at + timedelta(seconds=max_queue) < now:
            if transition(session, job.id, expected=("queued",), to="failed",
                          error_code="queue_timeout",
                          error_message=f"the job waited in the queue for more than "
                                        f"{max_queue} s (max_queue_seconds)",
                          error_hint=hint_for("queue_timeout")):
                add_event(session, job.id, "failed", "queue timeout", {"code": "queue_timeout"})
        elif job.enqueued_at is None or job.enqueued_at < stale:
            add_event(session, job.id, "resent", "The job was sent to the workers again")
            send(session, job.id, enqueue)


def _take_back(session: Session, job: Job, enqueue: Enqueue) -> None:
    owner, expected = job.lease_owner, job.status
    # Only this exact lease: a worker that renewed in the meantime keeps its job.
    result = session.execute(
        update(Job).where(Job.id == job.id, Job.status == expected, Job.lease_owner == owner,
                          Job.lease_expires_at == job.lease_expires_at)
        .values(lease_owner=None).execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return
    open_attempt = session.scalars(select(JobAttempt).where(
        JobAttempt.job_id == job.id, JobAttempt.number == job.attempt,
        JobAttempt.outcome.is_(None))).first()
    if open_attempt is not None:
        end_attempt(session, job.id, open_attempt.number, "lease_expired",
                    error_code="lease_expired")
    add_event(session, job.id, "lease_expired",
              f"The lease of worker {owner} expired: its machine or process is gone")
    if expected == "cancelling":
        if transition(session, job.id, expected=("cancelling",), to="cancelled"):
            add_event(session, job.id, "cancelled", "Job cancelled")
        return
    retry_or_fail(session, job.id, code="lease_expired",
                  message=f"worker {owner} stopped renewing its lease",
                  expected=("running",), enqueue=enqueue)
