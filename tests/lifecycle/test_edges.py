"""Every operation from every state: it follows exactly the edge the table allows (status,
events, the columns it sets and clears, the attempt it closes, the message it sends) and
changes nothing where the table has no edge. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.jobs import lifecycle
from app.jobs.lifecycle import EDGES, Edge, Lease
from app.models import Job, JobAttempt, JobStatus
from tests.lifecycle.conftest import LEASE_SECONDS, Jobs


@dataclass(frozen=True)
class Operation:
    name: str
    edges: tuple[str, ...]  # the edges it may follow here; the from-state picks one
    call: Callable[[Session, Lease, Jobs], Any]
    spec: dict[str, Any] | None = None
    expired_lease: bool = False


def _retry(session: Session, lease: Lease, jobs: Jobs) -> bool:
    return lifecycle.retry(session, lease, outcome="crashed", code="worker_crashed",
                           message="the trainer process was killed by SIGSEGV",
                           runtime_seconds=2.0, log_tail=["boom"], enqueue=jobs.enqueue)


def _take_back(session: Session, lease: Lease, jobs: Jobs) -> bool:
    job = session.get(Job, lease.job_id)
    assert job is not None
    return lifecycle.take_back(session, job, jobs.enqueue)


OPERATIONS = [
    Operation("claim", ("claim",), lambda s, lease, jobs: lifecycle.claim(
        s, lease.job_id, "host-b:2", "host-b", LEASE_SECONDS)),
    Operation("renew", ("renew",), lambda s, lease, jobs: lifecycle.renew(
        s, lease, LEASE_SECONDS * 2)),
    Operation("report progress", ("report progress",),
              lambda s, lease, jobs: lifecycle.report_progress(
                  s, lease.job_id, lease.attempt, step=7, total_steps=10, epoch=0.7,
                  eta_seconds=3.0, latest={"train": {"loss": 0.5}})),
    Operation("resend", ("resend",), lambda s, lease, jobs: lifecycle.resend(
        s, lease.job_id, jobs.enqueue)),
    Operation("cancel", ("cancel", "request cancel"),
              lambda s, lease, jobs: lifecycle.cancel(s, lease.job_id)),
    Operation("succeed", ("succeed",), lambda s, lease, jobs: lifecycle.succeed(
        s, lease, {"eval_f1": 1.0}, 2.0)),
    Operation("fail", ("fail",), lambda s, lease, jobs: lifecycle.fail(
        s, lease, "dataset_invalid", "one class only", None, 2.0)),
    Operation("time out", ("time out",), lambda s, lease, jobs: lifecycle.time_out(
        s, lease, 2.0)),
    Operation("stop cancelled", ("stop cancelled",),
              lambda s, lease, jobs: lifecycle.stop_cancelled(s, lease, 2.0)),
    Operation("interrupt", ("interrupt",), lambda s, lease, jobs: lifecycle.interrupt(
        s, lease, 2.0, jobs.enqueue)),
    Operation("retry", ("retry", "retry, cancelled"), _retry),
    Operation("retry, attempts used up", ("give up", "retry, cancelled"), _retry,
              {"max_attempts": 1}),
    Operation("take back", ("take back", "take back, cancelled"), _take_back,
              expired_lease=True),
    Operation("take back, attempts used up", ("take back, give up", "take back, cancelled"),
              _take_back, {"max_attempts": 1}, expired_lease=True),
    Operation("queue timeout", ("queue timeout",), lambda s, lease, jobs: (
        lifecycle.expire_in_queue(s, lease.job_id, 60)), {"max_queue_seconds": 60}),
]


def _edge(operation: Operation, status: JobStatus) -> Edge | None:
    found = [EDGES[name] for name in operation.edges if status in EDGES[name].sources]
    assert len(found) <= 1, (operation.name, status, found)
    return found[0] if found else None


def test_the_operations_cover_every_edge() -> None:
    covered = {name for operation in OPERATIONS for name in operation.edges}
    assert covered == set(EDGES) - {"submit"}


def test_final_states_have_no_way_out_and_the_rest_have_one() -> None:
    left = {status for edge in EDGES.values() for status in edge.sources}
    assert left == set(lifecycle.ACTIVE)
    assert set(lifecycle.TERMINAL) == set(JobStatus) - left
    assert {edge.target for edge in EDGES.values() if edge.target} == set(JobStatus)


def test_every_final_edge_stamps_finished_at_and_every_sent_job_is_queued() -> None:
    for edge in EDGES.values():
        assert ("finished_at" in edge.sets) == (edge.target in lifecycle.TERMINAL), edge.name
        if "enqueued_at" in edge.sets:
            assert edge.target in (JobStatus.QUEUED, None), edge.name
            assert JobStatus.QUEUED in (edge.target, *edge.sources), edge.name


def test_submit_queues_the_job_and_sends_it_after_the_commit(jobs: Jobs) -> None:
    job_id = jobs.submit()
    job = jobs.get(job_id)
    assert job.status == JobStatus.QUEUED and job.enqueued_at is not None
    assert jobs.kinds(job_id) == list(EDGES["submit"].events)
    assert jobs.sent == [job_id]


@pytest.mark.parametrize("status", list(JobStatus))
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.name)
def test_each_operation_from_each_state(jobs: Jobs, operation: Operation,
                                        status: JobStatus) -> None:
    lease = jobs.in_status(status, **(operation.spec or {}))
    if operation.expired_lease:
        jobs.expire_lease(lease.job_id)
    before, kinds, attempts = jobs.row(lease.job_id), jobs.kinds(lease.job_id), _attempts(jobs)
    jobs.sent.clear()

    result = jobs.do(lambda session: operation.call(session, lease, jobs))

    after = jobs.row(lease.job_id)
    edge = _edge(operation, status)
    if edge is None:
        assert not result or operation.name == "report progress"
        assert after == before, "a refused move changed the job"
        assert jobs.kinds(lease.job_id) == kinds and _attempts(jobs) == attempts
        assert jobs.sent == []
        return
    assert result
    assert after["status"] == (edge.target or status)
    assert jobs.kinds(lease.job_id) == kinds + list(edge.events)
    for column in edge.clears:
        assert after[column] is None, column
    for column in edge.sets:
        assert after[column] is not None, column
    untouched = set(before) - set(edge.sets) - set(edge.clears) - {"status", "updated_at"}
    assert {c: after[c] for c in untouched} == {c: before[c] for c in untouched}
    assert jobs.sent == ([lease.job_id] if "enqueued_at" in edge.sets else [])
    changed = {key: outcome for key, outcome in _attempts(jobs).items()
               if attempts.get(key, "new") != outcome}
    if edge.name == "claim":
        assert changed == {(lease.job_id, lease.attempt + 1): None}
    elif edge.ends_attempt:
        assert list(changed) == [(lease.job_id, lease.attempt)]
        assert changed[(lease.job_id, lease.attempt)] is not None
    else:
        assert changed == {}


@pytest.mark.parametrize("name", [name for name, edge in EDGES.items()
                                  if edge.guard is lifecycle.Guard.LEASE_HOLDER])
def test_a_worker_without_the_lease_moves_nothing(jobs: Jobs, name: str) -> None:
    operation = next(op for op in OPERATIONS if name in op.edges)
    status = next(status for status in JobStatus if status in EDGES[name].sources)
    lease = jobs.in_status(status, **(operation.spec or {}))
    before, kinds = jobs.row(lease.job_id), jobs.kinds(lease.job_id)
    for stranger in (Lease(lease.job_id, "host-b:2", lease.attempt),
                     Lease(lease.job_id, lease.owner, lease.attempt - 1)):
        assert not jobs.do(partial(operation.call, lease=stranger, jobs=jobs))
    assert jobs.row(lease.job_id) == before and jobs.kinds(lease.job_id) == kinds


def _attempts(jobs: Jobs) -> dict[tuple[str, int], str | None]:
    """Every attempt's outcome, by job and number."""
    with jobs.db() as session:
        return {(a.job_id, a.number): a.outcome for a in session.scalars(select(JobAttempt))}
