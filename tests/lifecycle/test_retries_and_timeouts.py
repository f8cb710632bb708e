"""Retries against max_attempts, timeouts in the queue and in training, and the reaper's
rounds: each the way the worker drives them, with no broker and no worker."""

from __future__ import annotations

from sqlalchemy import select, update

from app.jobs import lifecycle, reaper
from app.jobs.spec import SPEC_VERSION
from app.models import Job, JobAttempt, JobStatus
from tests.lifecycle.conftest import Jobs


def crash(jobs: Jobs, lease: lifecycle.Lease) -> bool:
    return jobs.do(lambda session: lifecycle.retry(
        session, lease, outcome="crashed", code="worker_crashed",
        message="the trainer process exited with status 1 without reporting an outcome",
        runtime_seconds=1.0, log_tail=["Traceback"], enqueue=jobs.enqueue))


def reap(jobs: Jobs, resend_after_seconds: float = 60) -> None:
    """A reaper's round, with a live worker offering 4 h100 devices."""
    jobs.serve("h100", 4)
    jobs.do(lambda session: reaper.reap(session, resend_after_seconds=resend_after_seconds,
                                        heartbeat_seconds=10, enqueue=jobs.enqueue))


def test_a_crashed_attempt_is_retried_until_max_attempts(jobs: Jobs) -> None:
    lease = jobs.running(max_attempts=2)
    assert crash(jobs, lease)
    job = jobs.get(lease.job_id)
    assert job.status == JobStatus.QUEUED and job.lease_owner is None
    assert jobs.sent == [lease.job_id, lease.job_id]  # submitted, then queued again
    second = jobs.claim(lease.job_id)
    assert second is not None and second.attempt == 2
    assert crash(jobs, second)
    job = jobs.get(lease.job_id)
    assert job.status == JobStatus.FAILED and job.error_code == "too_many_attempts"
    assert job.error_message == ("all 2 attempts failed (attempt 1: crashed; attempt 2: "
                                 "crashed); last: the trainer process exited with status 1 "
                                 "without reporting an outcome")
    assert jobs.kinds(lease.job_id) == ["queued", "started", "attempt_failed", "retrying",
                                        "started", "attempt_failed", "failed"]
    assert job.runtime_seconds == 2.0 and job.finished_at is not None
    assert jobs.sent == [lease.job_id, lease.job_id]


def test_an_interrupted_attempt_uses_up_no_attempt(jobs: Jobs) -> None:
    lease = jobs.running(max_attempts=2)
    assert jobs.do(lambda session: lifecycle.interrupt(session, lease, 1.0, jobs.enqueue))
    second = jobs.claim(lease.job_id)
    assert second is not None
    assert crash(jobs, second)
    assert jobs.get(lease.job_id).status == JobStatus.QUEUED  # 1 of 2 attempts used


def test_a_lost_worker_counts_as_an_attempt_and_the_last_one_fails_the_job(
        jobs: Jobs) -> None:
    lease = jobs.running(max_attempts=1)
    jobs.expire_lease(lease.job_id)
    reap(jobs)
    job = jobs.get(lease.job_id)
    assert job.status == JobStatus.FAILED and job.error_code == "too_many_attempts"
    assert jobs.kinds(lease.job_id)[-2:] == ["lease_expired", "failed"]


def test_the_reaper_takes_back_an_expired_lease_and_sends_the_job_again(jobs: Jobs) -> None:
    lease = jobs.running()
    jobs.expire_lease(lease.job_id)
    jobs.sent.clear()
    reap(jobs)
    job = jobs.get(lease.job_id)
    assert job.status == JobStatus.QUEUED and job.lease_owner is None
    assert jobs.kinds(lease.job_id)[-2:] == ["lease_expired", "retrying"]
    assert jobs.sent == [lease.job_id]


def test_an_expired_lease_of_a_job_being_cancelled_ends_it_cancelled(jobs: Jobs) -> None:
    lease = jobs.in_status(JobStatus.CANCELLING)
    jobs.expire_lease(lease.job_id)
    reap(jobs)
    assert jobs.get(lease.job_id).status == JobStatus.CANCELLED
    assert jobs.kinds(lease.job_id)[-2:] == ["lease_expired", "cancelled"]


def test_a_job_never_started_within_max_queue_seconds_fails(jobs: Jobs) -> None:
    waiting = jobs.submit(max_queue_seconds=60)
    fresh = jobs.submit(max_queue_seconds=60)
    jobs.age(waiting, 61)
    reap(jobs)
    job = jobs.get(waiting)
    assert job.status == JobStatus.FAILED and job.error_code == "queue_timeout"
    assert jobs.kinds(waiting) == ["queued", "failed"]
    assert jobs.get(fresh).status == JobStatus.QUEUED


def test_a_job_queued_again_after_it_started_has_no_queue_timeout(jobs: Jobs) -> None:
    lease = jobs.running(max_queue_seconds=60)
    assert jobs.do(lambda session: lifecycle.interrupt(session, lease, 1.0, jobs.enqueue))
    jobs.age(lease.job_id, 61)
    reap(jobs)
    assert jobs.get(lease.job_id).status == JobStatus.QUEUED
    assert jobs.kinds(lease.job_id)[-1] == "resent"


def test_the_reaper_sends_again_a_queued_job_no_worker_took(jobs: Jobs) -> None:
    stale, recent = jobs.submit(), jobs.submit()
    jobs.age(stale, 120)
    jobs.sent.clear()
    reap(jobs, resend_after_seconds=60)
    assert stale in jobs.sent and recent not in jobs.sent
    assert jobs.kinds(stale) == ["queued", "resent"] and jobs.kinds(recent) == ["queued"]
    assert jobs.get(stale).enqueued_at > jobs.get(recent).created_at


def test_a_run_past_max_runtime_seconds_fails_with_timeout(jobs: Jobs) -> None:
    lease = jobs.running(max_runtime_seconds=100)
    assert jobs.do(lambda session: lifecycle.time_out(session, lease, 100.5))
    job = jobs.get(lease.job_id)
    assert (job.status, job.error_code, job.runtime_seconds) == (JobStatus.FAILED, "timeout",
                                                                 100.5)
    with jobs.db() as session:
        attempt = session.scalars(select(JobAttempt).where(
            JobAttempt.job_id == lease.job_id)).one()
    assert (attempt.outcome, attempt.error_code) == ("timeout", "timeout")


def test_the_runtime_budget_is_what_the_earlier_attempts_left(jobs: Jobs) -> None:
    lease = jobs.running(max_runtime_seconds=100)
    with jobs.db() as session:
        session.execute(update(Job).where(Job.id == lease.job_id).values(runtime_seconds=30))
        session.commit()
    job = jobs.get(lease.job_id)
    assert lifecycle.runtime_left(job, max_job_seconds=3600) == 70
    assert lifecycle.runtime_left(job, max_job_seconds=50) == 20  # the server's cap


def test_the_reaper_leaves_jobs_of_a_newer_spec_to_up_to_date_workers(jobs: Jobs) -> None:
    # Stored by a newer release during a rolling deploy: this release cannot read the spec.
    lease, queued = jobs.running(), jobs.submit()
    jobs.expire_lease(lease.job_id)
    jobs.age(queued, 120)
    jobs.do(lambda session: session.execute(
        update(Job).values(spec_version=SPEC_VERSION + 1)))
    jobs.sent.clear()
    reap(jobs, resend_after_seconds=60)
    assert jobs.get(lease.job_id).status == JobStatus.RUNNING
    assert jobs.get(queued).status == JobStatus.QUEUED and jobs.sent == []


def test_every_send_goes_to_the_queue_of_the_jobs_class(jobs: Jobs) -> None:
    lease = jobs.running(compute={"gpus": 2, "gpu_type": "h100"}, max_attempts=3)
    assert jobs.queues[lease.job_id] == "jobs.h100.2"
    jobs.queues.clear()
    assert crash(jobs, lease)  # a retry
    assert jobs.queues == {lease.job_id: "jobs.h100.2"}
    anywhere = jobs.submit(compute={"gpus": 3})
    assert jobs.queues[anywhere] == "jobs.any.3"
    jobs.age(anywhere, 120)
    jobs.queues.clear()
    reap(jobs, resend_after_seconds=60)  # the reaper's resend
    assert jobs.queues[anywhere] == "jobs.any.3"


def test_a_job_no_live_worker_serves_is_not_sent_again_until_one_is(jobs: Jobs) -> None:
    waiting = jobs.submit(compute={"gpu_type": "tpu"})
    jobs.age(waiting, 120)
    jobs.sent.clear()
    reap(jobs, resend_after_seconds=60)  # its message waits in jobs.tpu.1: no copies
    assert waiting not in jobs.sent and jobs.kinds(waiting) == ["queued"]
    jobs.serve("tpu", 1, worker_id="host-b:2")
    reap(jobs, resend_after_seconds=60)
    assert jobs.queues[waiting] == "jobs.tpu.1" and jobs.kinds(waiting) == ["queued", "resent"]
