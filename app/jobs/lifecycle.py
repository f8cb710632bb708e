"""The job lifecycle: every allowed move between a job's states, and the operations on top.

EDGES is the whole state machine. Each operation follows one of its rows with one conditional
UPDATE (`WHERE id = :id AND status IN (:from)`, and for a job a worker holds, `AND lease_owner
= :owner AND attempt = :number`), so of two actors racing for a job exactly one wins and a late
message, reaper or worker does nothing. Nothing else writes a job's status (a test checks). The
API (submit, cancel) and the worker (claim ... retry, the reaper) both import this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from app.broker import job_queue
from app.db import after_commit
from app.error_codes import hint_for
from app.jobs import attempt_settings
from app.jobs.attempt_settings import OUT_OF_MEMORY
from app.jobs.spec import JobSpec
from app.models import Job, JobAttempt, JobEvent, JobStatus, utcnow
from app.webhooks import outbox

# Sends "run job X" (the job's id) to a queue (its class's: queue_of), after the commit.
Enqueue = Callable[[str, str], None]

QUEUED, RUNNING, CANCELLING = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELLING
SUCCEEDED, FAILED, CANCELLED = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED
ACTIVE = (QUEUED, RUNNING, CANCELLING)
# A worker holds the job under a lease (lease_owner until lease_expires_at).
LEASED = (RUNNING, CANCELLING)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)

# Outcomes that use up one of the job's max_attempts. An interrupted attempt (a worker's
# shutdown) does not: a deploy must never fail a job. Nor does an out-of-memory one: its
# successor shrinks the batch, and the shrinking ends by itself (attempt_settings.py). A full
# disk or an absent store may last: counted, so that a disk too small for the job ends it.
COUNTED_OUTCOMES = ("crashed", "killed", "lease_expired", "storage_full", "storage_unavailable")


class Guard(StrEnum):
    """Who may follow an edge, besides the job being in one of its from-states."""

    ANYONE = "anyone"
    LEASE_HOLDER = "lease holder"  # lease_owner and attempt are the caller's
    ATTEMPT = "running attempt"  # attempt is the caller's (the trainer child)
    EXPIRED_LEASE = "expired lease"  # the lease the reaper saw expire, unchanged since
    NEVER_STARTED = "never started"  # attempt = 0


LEASE = ("lease_owner", "lease_expires_at")
ERROR = ("error_code", "error_message", "error_hint")
# Stamped with the time of the move; `enqueued_at` also sends "run job X" after the commit.
STAMPED = ("finished_at", "enqueued_at")
PROGRESS = ("step", "total_steps", "epoch", "eta_seconds", "metrics")


@dataclass(frozen=True)
class Edge:
    """One allowed move: from one of `sources` to `target`, when `guard` holds, recording
    `events`, writing `sets` and nulling `clears` in the same UPDATE."""

    name: str
    sources: tuple[JobStatus, ...]
    target: JobStatus | None  # None: the status stays
    events: tuple[str, ...]  # the JobEvent kinds recorded, in order
    sets: tuple[str, ...] = ()
    clears: tuple[str, ...] = ()
    guard: Guard = Guard.ANYONE

    @property
    def ends_attempt(self) -> bool:
        """A worker's lease moving its job on ends the attempt; the attempt records how."""
        return self.target is not None and self.guard in (Guard.LEASE_HOLDER,
                                                          Guard.EXPIRED_LEASE)


_REQUEUED = (*LEASE, "eta_seconds")
_HOLDER, _EXPIRED = Guard.LEASE_HOLDER, Guard.EXPIRED_LEASE
EDGES = {edge.name: edge for edge in (
    Edge("submit", (), QUEUED, ("queued",), sets=("enqueued_at",)),
    Edge("claim", (QUEUED,), RUNNING, ("started",),
         sets=("worker", "attempt", *LEASE, "started_at")),
    Edge("renew", LEASED, None, (), sets=("lease_expires_at",), guard=_HOLDER),
    Edge("report progress", LEASED, None, (), sets=PROGRESS, guard=Guard.ATTEMPT),
    Edge("resend", (QUEUED,), None, ("resent",), sets=("enqueued_at",)),
    Edge("cancel", (QUEUED,), CANCELLED, ("cancelled",), sets=("finished_at",)),
    Edge("request cancel", (RUNNING,), CANCELLING, ("cancelling",)),
    Edge("succeed", LEASED, SUCCEEDED, ("succeeded",),
         sets=("metrics", "runtime_seconds", "finished_at"), clears=LEASE, guard=_HOLDER),
    Edge("fail", LEASED, FAILED, ("failed",),
         sets=(*ERROR, "runtime_seconds", "finished_at"), clears=LEASE, guard=_HOLDER),
    Edge("time out", LEASED, FAILED, ("failed",),
         sets=(*ERROR, "runtime_seconds", "finished_at"), clears=LEASE, guard=_HOLDER),
    Edge("stop cancelled", LEASED, CANCELLED, ("cancelled",),
         sets=("runtime_seconds", "finished_at"), clears=LEASE, guard=_HOLDER),
    Edge("interrupt", (RUNNING,), QUEUED, ("interrupted",),
         sets=("runtime_seconds", "enqueued_at"), clears=_REQUEUED, guard=_HOLDER),
    Edge("retry", (RUNNING,), QUEUED, ("attempt_failed", "retrying"),
         sets=("runtime_seconds", "enqueued_at"), clears=_REQUEUED, guard=_HOLDER),
    Edge("give up", (RUNNING,), FAILED, ("attempt_failed", "failed"),
         sets=(*ERROR, "runtime_seconds", "finished_at"), clears=LEASE, guard=_HOLDER),
    # A failed attempt of a job whose cancel was requested is not retried: the user asked.
    Edge("retry, cancelled", (CANCELLING,), CANCELLED, ("attempt_failed", "cancelled"),
         sets=("runtime_seconds", "finished_at"), clears=LEASE, guard=_HOLDER),
    Edge("take back", (RUNNING,), QUEUED, ("lease_expired", "retrying"),
         sets=("enqueued_at",), clears=_REQUEUED, guard=_EXPIRED),
    Edge("take back, give up", (RUNNING,), FAILED, ("lease_expired", "failed"),
         sets=(*ERROR, "finished_at"), clears=LEASE, guard=_EXPIRED),
    Edge("take back, cancelled", (CANCELLING,), CANCELLED, ("lease_expired", "cancelled"),
         sets=("finished_at",), clears=LEASE, guard=_EXPIRED),
    Edge("queue timeout", (QUEUED,), FAILED, ("failed",), sets=(*ERROR, "finished_at"),
         guard=Guard.NEVER_STARTED),
)}

# An event's message and data, recorded under the kind the edge names.
Note = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Lease:
    """A worker's hold on a running job: the job moves only while these still match."""

    job_id: str
    owner: str
    attempt: int
    # Only when taking an expired lease back: the expiry the reaper saw.
    expires_at: datetime | None = None


def add_event(session: Session, job_id: str, kind: str, message: str,
              data: dict[str, Any] | None = None) -> None:
    """A line in the job's timeline (GET /v1/jobs/{id}/events), and the webhooks it makes,
    in the same transaction."""
    # A diverged loss is NaN, which JSON (PostgreSQL's above all) cannot hold: null instead.
    data = outbox.plain_json(data or {})
    session.add(JobEvent(job_id=job_id, kind=kind, message=message, data=data))
    outbox.record(session, job_id, kind, message, data)


def submit(session: Session, job: Job, enqueue: Enqueue, data: dict[str, Any]) -> Job:
    """A new job, queued; "run job X" is sent once the transaction commits."""
    edge = EDGES["submit"]
    job.status, job.enqueued_at = QUEUED, utcnow()
    session.add(job)
    session.flush()
    _record(session, job.id, edge, ("Job queued", data))
    _send(session, job, enqueue)
    return job


def queue_of(job: Job) -> str:
    """The queue of the job's class: what its stored spec asks of a worker."""
    compute = JobSpec.from_stored(job.spec, job.spec_version).compute
    return job_queue(compute.gpus, compute.gpu_type)


def claim(session: Session, job_id: str, owner: str, host: str,
          lease_seconds: float) -> Lease | None:
    """queued -> running under a fresh lease, as a new attempt; None when another actor won."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        return None
    now, number = utcnow(), job.attempt + 1
    settings = attempt_settings.for_next_attempt(session, job)
    # The attempt read above is part of the condition: a claim in between makes this one lose.
    if not _move(session, EDGES["claim"], job_id,
                 (f"Attempt {number} started on {host}", {"attempt": number, "worker": host}),
                 where=(Job.attempt == job.attempt,), worker=host, attempt=number,
                 lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds),
                 started_at=job.started_at or now):
        return None
    session.add(JobAttempt(job_id=job_id, number=number, worker=host, started_at=now,
                           settings=settings.stored()))
    session.flush()
    return Lease(job_id, owner, number)


def renew(session: Session, lease: Lease, lease_seconds: float) -> bool:
    """False when the job is no longer ours: the trainer must stop at once."""
    return _move(session, EDGES["renew"], lease.job_id, lease=lease,
                 lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))


def report_progress(session: Session, job_id: str, attempt: int, *, step: int,
                    total_steps: int | None, epoch: float | None, eta_seconds: float | None,
                    latest: dict[str, dict[str, float]]) -> JobStatus | None:
    """Store a running attempt's progress; returns the job's status, which tells the trainer
    to stop. An attempt whose lease was taken back writes nothing."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        return None
    _move(session, EDGES["report progress"], job_id, running_attempt=attempt, step=step,
          total_steps=total_steps, epoch=epoch,
          eta_seconds=round(eta_seconds, 1) if eta_seconds is not None else None,
          metrics={**job.metrics, **latest})
    return job.status


def cancel(session: Session, job_id: str) -> bool:
    """Queued: cancelled at once. Running: cancelling, until its worker stops it."""
    return (_move(session, EDGES["cancel"], job_id, ("Job cancelled before it started", {}))
            or _move(session, EDGES["request cancel"], job_id,
                     ("Cancel requested; stopping at the next step", {})))


def succeed(session: Session, lease: Lease, metrics: dict[str, Any],
            runtime_seconds: float) -> bool:
    job = session.get(Job, lease.job_id, populate_existing=True)
    final = {**(job.metrics if job else {}), "final": metrics}
    return _end(session, EDGES["succeed"], lease, "succeeded", runtime_seconds,
                ("Job succeeded", {"metrics": metrics}), metrics=final)


def fail(session: Session, lease: Lease, code: str, message: str, hint: str | None = None,
         runtime_seconds: float = 0.0) -> bool:
    """A failure that another attempt would not fix."""
    return _fail(session, EDGES["fail"], lease, "failed", code, message, hint, runtime_seconds)


def time_out(session: Session, lease: Lease, runtime_seconds: float) -> bool:
    """The job trained past its max_runtime_seconds (its trainer saved a checkpoint)."""
    return _fail(session, EDGES["time out"], lease, "timeout", "timeout",
                 "the job trained longer than its max_runtime_seconds; a checkpoint was saved",
                 None, runtime_seconds)


def runtime_left(job: Job, max_job_seconds: float) -> float:
    """Seconds the next attempt may train before it times out: what max_runtime_seconds,
    within the server's cap, leaves after the earlier attempts."""
    limit = JobSpec.from_stored(job.spec, job.spec_version).max_runtime_seconds or math.inf
    return max(0.0, min(limit, max_job_seconds) - job.runtime_seconds)


def stop_cancelled(session: Session, lease: Lease, runtime_seconds: float) -> bool:
    """The worker stopped a job whose cancel was requested."""
    return _end(session, EDGES["stop cancelled"], lease, "cancelled", runtime_seconds,
                ("Job cancelled", {}))


def interrupt(session: Session, lease: Lease, runtime_seconds: float,
              enqueue: Enqueue) -> bool:
    """The worker shut down: queued again, resuming from the last checkpoint; no attempt used."""
    message = ("The worker shut down; the job is queued again and resumes from its last "
               "checkpoint on the next worker")
    return _end(session, EDGES["interrupt"], lease, "interrupted", runtime_seconds,
                (message, {}), enqueue=enqueue)


def retry(session: Session, lease: Lease, *, outcome: str, code: str, message: str,
          runtime_seconds: float, log_tail: list[str], enqueue: Enqueue) -> bool:
    """An attempt failed in a way another attempt may fix: queued again, or failed with
    too_many_attempts once max_attempts are used up. Out of memory: queued again with
    smaller settings, or failed out_of_memory when nothing is left to shrink."""
    job = session.get(Job, lease.job_id, populate_existing=True)
    if job is None:
        return False
    failed = (message, {"attempt": lease.attempt, "code": code, "log_tail": log_tail})
    if job.status != RUNNING:
        retried = False
    elif outcome == OUT_OF_MEMORY:
        retried = _retry_smaller(session, job, lease, message, failed, runtime_seconds, enqueue)
    else:
        retried = _retry_or_give_up(session, job, lease, outcome, code, message, failed,
                                    (EDGES["retry"], EDGES["give up"]), runtime_seconds,
                                    enqueue)
    # A cancel may land between the read above and the move: then the cancelled edge applies.
    return (retried
            or _end(session, EDGES["retry, cancelled"], lease, outcome, runtime_seconds,
                    failed, ("Job cancelled", {}), error_code=code))


def take_back(session: Session, job: Job, enqueue: Enqueue) -> bool:
    """Take back a job whose lease expired; a worker that renewed in the meantime keeps it."""
    owner = job.lease_owner or ""
    lease = Lease(job.id, owner, job.attempt, job.lease_expires_at)
    expired = (f"The lease of worker {owner} expired: its machine or process is gone", {})
    if job.status == CANCELLING:
        return _end(session, EDGES["take back, cancelled"], lease, "lease_expired", 0.0,
                    expired, ("Job cancelled", {}), error_code="lease_expired")
    return _retry_or_give_up(session, job, lease, "lease_expired", "lease_expired",
                             f"worker {owner} stopped renewing its lease", expired,
                             (EDGES["take back"], EDGES["take back, give up"]), 0.0, enqueue)


def resend(session: Session, job_id: str, enqueue: Enqueue) -> bool:
    """Send "run job X" again for a queued job whose message may have been lost."""
    return _move(session, EDGES["resend"], job_id,
                 ("The job was sent to the workers again", {}), enqueue=enqueue)


def expire_in_queue(session: Session, job_id: str, max_queue_seconds: int) -> bool:
    """Fail a job that never started within its max_queue_seconds."""
    return _move(session, EDGES["queue timeout"], job_id, ("queue timeout",
                                                           {"code": "queue_timeout"}),
                 error_code="queue_timeout",
                 error_message=f"the job waited in the queue for more than {max_queue_seconds}"
                               " s (max_queue_seconds)",
                 error_hint=hint_for("queue_timeout"))


def _fail(session: Session, edge: Edge, lease: Lease, outcome: str, code: str, message: str,
          hint: str | None, runtime_seconds: float) -> bool:
    hint = hint or hint_for(code)
    return _end(session, edge, lease, outcome, runtime_seconds,
                (message, {"code": code, "hint": hint}), error_code=code, error_message=message,
                error_hint=hint)


def _retry_or_give_up(session: Session, job: Job, lease: Lease, outcome: str, code: str,
                      message: str, first: Note, edges: tuple[Edge, Edge],
                      runtime_seconds: float, enqueue: Enqueue) -> bool:
    attempts = list(session.scalars(select(JobAttempt).where(JobAttempt.job_id == job.id)
                                    .order_by(JobAttempt.number)))
    # This attempt counts as ended with `outcome`: it is closed by the move below.
    outcomes = [(a.number, outcome if a.number == lease.attempt else a.outcome)
                for a in attempts]
    used = sum(1 for _, ended in outcomes if ended in COUNTED_OUTCOMES)
    allowed = JobSpec.from_stored(job.spec, job.spec_version).max_attempts
    retrying, giving_up = edges
    if used < allowed:
        again = (f"{message}; attempt {used} of {allowed} failed, the job is queued again and "
                 "resumes from its last checkpoint")
        return _end(session, retrying, lease, outcome, runtime_seconds, first, (again, {}),
                    error_code=code, enqueue=enqueue)
    history = "; ".join(f"attempt {number}: {ended}" for number, ended in outcomes if ended)
    return _end(session, giving_up, lease, outcome, runtime_seconds, first, (
        f"all {allowed} attempts failed",
        {"code": "too_many_attempts", "last_error": code, "attempts": history}),
        error_code="too_many_attempts",
        error_message=f"all {allowed} attempts failed ({history}); last: {message}",
        error_hint=hint_for("too_many_attempts"), attempt_error=code)


def _retry_smaller(session: Session, job: Job, lease: Lease, message: str, failed: Note,
                   runtime_seconds: float, enqueue: Enqueue) -> bool:
    """Queue an out-of-memory job again for an attempt with smaller settings, which
    for_next_attempt gives it at its claim; say what changes and why."""
    current = attempt_settings.of_attempt(session, job, lease.attempt)
    smaller = current.smaller()
    if smaller is None:
        hint = attempt_settings.exhausted_hint(JobSpec.from_stored(job.spec, job.spec_version))
        exhausted = attempt_settings.exhausted_message(current)
        return _end(session, EDGES["give up"], lease, OUT_OF_MEMORY, runtime_seconds, failed,
                    (exhausted, {"code": OUT_OF_MEMORY, "hint": hint}),
                    error_code=OUT_OF_MEMORY, error_message=f"{exhausted} (last: {message})",
                    error_hint=hint)
    if not _end(session, EDGES["retry"], lease, OUT_OF_MEMORY, runtime_seconds, failed,
                (f"{message}; the job is queued again with smaller settings", {}),
                error_code=OUT_OF_MEMORY, enqueue=enqueue):
        return False
    add_event(session, job.id, "settings_changed", attempt_settings.shrink_message(
        current, smaller), {"reason": OUT_OF_MEMORY, "attempt": lease.attempt + 1,
                            "from": current.stored(), "to": smaller.stored()})
    return True


def _end(session: Session, edge: Edge, lease: Lease, outcome: str, runtime_seconds: float,
         *notes: Note, error_code: str | None = None, attempt_error: str | None = None,
         enqueue: Enqueue | None = None, **values: Any) -> bool:
    """Follow an edge that ends the lease's attempt, and close that attempt."""
    if "runtime_seconds" in edge.sets:
        values["runtime_seconds"] = Job.runtime_seconds + runtime_seconds
    if "error_code" in edge.sets:
        values["error_code"] = error_code
    if not _move(session, edge, lease.job_id, *notes, lease=lease, enqueue=enqueue, **values):
        return False
    session.execute(
        update(JobAttempt).where(JobAttempt.job_id == lease.job_id,
                                 JobAttempt.number == lease.attempt, JobAttempt.outcome.is_(None))
        .values(outcome=outcome, error_code=attempt_error or error_code, ended_at=utcnow(),
                last_step=select(Job.step).where(Job.id == lease.job_id).scalar_subquery())
        .execution_options(synchronize_session=False))
    return True


def _guard(edge: Edge, lease: Lease | None,
           running_attempt: int | None) -> Sequence[ColumnElement[bool]]:
    """The conditions, besides the from-states, under which `edge` may be followed."""
    if edge.guard is Guard.ANYONE:
        return ()
    if edge.guard is Guard.NEVER_STARTED:
        return (Job.attempt == 0,)
    if edge.guard is Guard.ATTEMPT and running_attempt is not None:
        return (Job.attempt == running_attempt,)
    if edge.guard is Guard.LEASE_HOLDER and lease is not None:
        return Job.lease_owner == lease.owner, Job.attempt == lease.attempt
    if edge.guard is Guard.EXPIRED_LEASE and lease is not None and lease.expires_at:
        return (Job.lease_owner == lease.owner, Job.attempt == lease.attempt,
                Job.lease_expires_at == lease.expires_at, Job.lease_expires_at < utcnow())
    raise ValueError(f"edge '{edge.name}' is for the {edge.guard}: say who follows it")


def _move(session: Session, edge: Edge, job_id: str, *notes: Note, lease: Lease | None = None,
          running_attempt: int | None = None, where: Sequence[ColumnElement[bool]] = (),
          enqueue: Enqueue | None = None, **values: Any) -> bool:
    """Follow `edge` if the job is in one of its from-states, its guard and `where` hold;
    record its events. False when the job is elsewhere: another actor won."""
    unknown = set(values) - set(edge.sets)
    if unknown:
        raise ValueError(f"edge '{edge.name}' does not set {sorted(unknown)}")
    if "enqueued_at" in edge.sets and enqueue is None:
        raise ValueError(f"edge '{edge.name}' sends the job: it needs an enqueue")
    now = utcnow()
    values |= {column: None for column in edge.clears}
    values |= {column: now for column in STAMPED if column in edge.sets}
    if edge.target is not None:
        values["status"] = edge.target
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status.in_(edge.sources),
                          *_guard(edge, lease, running_attempt), *where)
        .values(updated_at=now, **values).execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    _record(session, job_id, edge, *notes)
    if enqueue is not None and "enqueued_at" in edge.sets:
        _send(session, session.get_one(Job, job_id), enqueue)
    return True


def _send(session: Session, job: Job, enqueue: Enqueue) -> None:
    job_id, queue = job.id, queue_of(job)
    after_commit(session, lambda: enqueue(job_id, queue))


def _record(session: Session, job_id: str, edge: Edge, *notes: Note) -> None:
    for kind, (message, data) in zip(edge.events, notes, strict=True):
        add_event(session, job_id, kind, message, data)
