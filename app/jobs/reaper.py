"""The reaper: what no single worker sees. It runs in every worker at once, which is safe
because each move it makes is a lifecycle operation (a conditional UPDATE)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.jobs import lifecycle
from app.jobs.spec import SPEC_VERSION, JobSpec
from app.models import Job, utcnow
from app.workers.service import live_workers


def reap(session: Session, *, resend_after_seconds: float, heartbeat_seconds: float,
         enqueue: lifecycle.Enqueue) -> None:
    """Take back jobs whose lease expired, fail queued jobs past their max_queue_seconds, and
    send again queued jobs that no worker has started for resend_after_seconds, to their
    class's queue. A job whose queue no live worker consumes is not sent again: its message
    waits there for such a worker, and copies would pile up behind it; once one is live, a
    lost message is sent again on the next round.

    A job whose spec is newer than this release reads (a rolling deploy) is left to the
    reapers of up-to-date workers."""
    now = utcnow()
    readable = Job.spec_version <= SPEC_VERSION
    expired = session.scalars(select(Job).where(
        Job.status.in_(lifecycle.LEASED), Job.lease_expires_at < now, readable)).all()
    for job in expired:
        lifecycle.take_back(session, job, enqueue)
    stale = now - timedelta(seconds=resend_after_seconds)
    served = {queue for worker in live_workers(session, heartbeat_seconds)
              for queue in worker.queues}
    queued = (select(Job).where(Job.status == lifecycle.QUEUED, readable)
              .execution_options(populate_existing=True))
    for job in session.scalars(queued).all():
        max_queue = JobSpec.from_stored(job.spec, job.spec_version).max_queue_seconds
        # Only a job that never started: a requeued one has been admitted already.
        if max_queue and job.attempt == 0 and job.created_at + timedelta(seconds=max_queue) < now:
            lifecycle.expire_in_queue(session, job.id, max_queue)
        elif ((job.enqueued_at is None or job.enqueued_at < stale)
              and lifecycle.queue_of(job) in served):
            lifecycle.resend(session, job.id, enqueue)
