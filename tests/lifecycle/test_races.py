"""Actors racing for one job, each in its own session and thread: exactly one wins, and the
loser changes nothing. On PostgreSQL the racers really overlap (row locks, re-checked WHERE);
SQLite serializes them, and the outcome must be the same."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.jobs import lifecycle, reaper
from app.models import JobAttempt, JobStatus
from tests.lifecycle.conftest import LEASE_SECONDS, Jobs


def race(jobs: Jobs, *moves: Callable[[Session], Any]) -> list[Any]:
    """Run each move in its own transaction and thread, started together."""
    start = threading.Barrier(len(moves))

    def run(move: Callable[[Session], Any]) -> Any:
        start.wait()
        return jobs.do(move)

    with ThreadPoolExecutor(len(moves)) as pool:
        return [future.result() for future in [pool.submit(run, move) for move in moves]]


def test_two_workers_claiming_one_job_exactly_one_runs_it(jobs: Jobs) -> None:
    for _ in range(5):
        job_id = jobs.submit()
        leases = race(jobs, *(partial(lifecycle.claim, job_id=job_id, owner=owner,
                                      host="host", lease_seconds=LEASE_SECONDS)
                              for owner in ("host-a:1", "host-b:2")))
        won = [lease for lease in leases if lease is not None]
        assert len(won) == 1
        job = jobs.get(job_id)
        assert job.status == JobStatus.RUNNING and job.lease_owner == won[0].owner
        assert job.attempt == 1 and jobs.kinds(job_id) == ["queued", "started"]


def test_a_lease_taken_back_while_its_trainer_still_reports(jobs: Jobs) -> None:
    old = jobs.running()
    assert jobs.do(lambda session: _progress(session, old, step=3)) == JobStatus.RUNNING
    jobs.expire_lease(old.job_id)
    jobs.do(lambda session: reaper.reap(session, resend_after_seconds=60, heartbeat_seconds=10,
                                        enqueue=jobs.enqueue))
    assert jobs.get(old.job_id).status == JobStatus.QUEUED

    def old_attempt_writes_nothing() -> None:
        jobs.do(lambda session: _progress(session, old, step=9))
        assert not jobs.do(lambda session: lifecycle.renew(session, old, LEASE_SECONDS))
        assert not jobs.do(lambda session: lifecycle.succeed(session, old, {"f1": 1.0}, 5.0))
        assert not jobs.do(lambda session: lifecycle.fail(session, old, "internal_error", "x"))
        assert jobs.get(old.job_id).step == 3

    # The old trainer and its supervisor go on, before and after another worker claims.
    old_attempt_writes_nothing()
    new = jobs.claim(old.job_id, "host-b:2")
    assert new is not None and new.attempt == 2
    old_attempt_writes_nothing()
    jobs.do(lambda session: _progress(session, new, step=4))
    job = jobs.get(old.job_id)
    assert (job.status, job.step, job.lease_owner) == (JobStatus.RUNNING, 4, "host-b:2")
    assert jobs.kinds(old.job_id) == ["queued", "started", "lease_expired", "retrying",
                                      "started"]
    assert _outcomes(jobs, old.job_id) == ["lease_expired", None]


def test_a_worker_that_renewed_after_the_reaper_looked_keeps_its_job(jobs: Jobs) -> None:
    lease = jobs.running()
    jobs.expire_lease(lease.job_id)
    seen = jobs.get(lease.job_id)  # the reaper's read
    assert jobs.do(lambda session: lifecycle.renew(session, lease, LEASE_SECONDS))
    assert not jobs.do(lambda session: lifecycle.take_back(session, seen, jobs.enqueue))
    job = jobs.get(lease.job_id)
    assert job.status == JobStatus.RUNNING and job.lease_owner == lease.owner


def test_a_cancel_racing_a_success_ends_one_way(jobs: Jobs) -> None:
    for _ in range(5):
        lease = jobs.running()
        cancelled, succeeded = race(
            jobs, partial(lifecycle.cancel, job_id=lease.job_id),
            partial(lifecycle.succeed, lease=lease, metrics={"f1": 1.0}, runtime_seconds=5.0))
        assert succeeded  # the trainer finished: a cancel that came late changes nothing
        assert jobs.get(lease.job_id).status == JobStatus.SUCCEEDED
        # Either the cancel came first (and was overtaken) or it found the job finished.
        expected = ["queued", "started", *(["cancelling"] if cancelled else []), "succeeded"]
        assert jobs.kinds(lease.job_id) == expected
        assert _outcomes(jobs, lease.job_id) == ["succeeded"]


def test_a_cancel_racing_a_claim_either_never_starts_or_stops(jobs: Jobs) -> None:
    for _ in range(5):
        job_id = jobs.submit()
        cancelled, lease = race(
            jobs, partial(lifecycle.cancel, job_id=job_id),
            partial(lifecycle.claim, job_id=job_id, owner="host-a:1", host="host",
                    lease_seconds=LEASE_SECONDS))
        assert cancelled
        if lease is None:
            assert jobs.get(job_id).status == JobStatus.CANCELLED
            assert jobs.kinds(job_id) == ["queued", "cancelled"]
        else:
            assert jobs.get(job_id).status == JobStatus.CANCELLING
            assert jobs.kinds(job_id) == ["queued", "started", "cancelling"]


def test_the_reaper_racing_a_finishing_worker_one_of_them_wins(jobs: Jobs) -> None:
    for _ in range(5):
        lease = jobs.running()
        jobs.expire_lease(lease.job_id)
        seen = jobs.get(lease.job_id)
        taken, succeeded = race(
            jobs, partial(lifecycle.take_back, job=seen, enqueue=jobs.enqueue),
            partial(lifecycle.succeed, lease=lease, metrics={"f1": 1.0}, runtime_seconds=5.0))
        assert taken != succeeded
        job = jobs.get(lease.job_id)
        if succeeded:
            assert job.status == JobStatus.SUCCEEDED
            assert _outcomes(jobs, lease.job_id) == ["succeeded"]
        else:
            assert job.status == JobStatus.QUEUED
            assert _outcomes(jobs, lease.job_id) == ["lease_expired"]


def _progress(session: Session, lease: lifecycle.Lease, step: int) -> JobStatus | None:
    return lifecycle.report_progress(session, lease.job_id, lease.attempt, step=step,
                                     total_steps=10, epoch=None, eta_seconds=None,
                                     latest={"train": {"loss": 1.0 / step}})


def _outcomes(jobs: Jobs, job_id: str) -> list[str | None]:
    with jobs.db() as session:
        return list(session.scalars(select(JobAttempt.outcome).where(
            JobAttempt.job_id == job_id).order_by(JobAttempt.number)))
