from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from app.deps import SessionDep, SettingsDep
from app.errors import error_responses
from app.idempotency import IdempotencyHeader
from app.jobs import service
from app.jobs.schemas import EventOut, EventPage, JobOut, MetricPointOut, MetricsOut
from app.jobs.spec import JobSpec
from app.models import Job
from app.pagination import AfterQuery, LimitQuery, Page

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

StatusQuery = Annotated[
    Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"] | None,
    Query(description="Only jobs in this status")]


@router.post("", status_code=201, response_model=JobOut,
             responses=error_responses(400, 409, 422, 503))
def create_job(spec: JobSpec, request: Request, session: SessionDep, settings: SettingsDep,
               idempotency_key: IdempotencyHeader = None) -> JobOut:
    """Submit a fine-tuning job; it starts in status `queued`."""
    job = service.create(session, spec, request.app.state.broker.enqueue, settings,
                         idempotency_key)
    return _out(session, job)


def _out(session: SessionDep, job: Job) -> JobOut:
    return JobOut.from_job(job, service.attempts(session, [job.id])[job.id])


@router.get("", response_model=Page[JobOut], responses=error_responses(422))
def list_jobs(session: SessionDep, status: StatusQuery = None, limit: LimitQuery = 20,
              after: AfterQuery = None) -> Page[JobOut]:
    """List jobs, newest first."""
    jobs, has_more = service.list_page(session, status, limit, after)
    attempts = service.attempts(session, [job.id for job in jobs])
    return Page[JobOut](data=[JobOut.from_job(job, attempts[job.id]) for job in jobs],
                        has_more=has_more)


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(404))
def get_job(job_id: str, session: SessionDep) -> JobOut:
    """Get a job: status, progress, metrics, error."""
    return _out(session, service.get(session, job_id))


@router.post("/{job_id}/cancel", response_model=JobOut, responses=error_responses(404, 409))
def cancel_job(job_id: str, session: SessionDep) -> JobOut:
    """Cancel a job: a queued job never starts, a running one stops at its next step."""
    return _out(session, service.cancel(session, job_id))


@router.get("/{job_id}/events", response_model=EventPage, responses=error_responses(404, 422))
def list_events(job_id: str, session: SessionDep,
                after: Annotated[int | None, Query(ge=0, le=2**62,
                                                  description="Last event id seen")] = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> EventPage:
    """The job's timeline, oldest first; poll with `after` to follow it."""
    events, has_more = service.events(session, job_id, after, limit)
    return EventPage(data=[EventOut.from_event(e) for e in events], has_more=has_more)


@router.get("/{job_id}/metrics", response_model=MetricsOut, responses=error_responses(404))
def get_metrics(job_id: str, session: SessionDep) -> MetricsOut:
    """Every logged metric as a time series by step."""
    series = service.metric_series(session, job_id)
    return MetricsOut(job_id=job_id, series={
        name: [MetricPointOut(step=p.step, epoch=p.epoch, value=p.value) for p in points]
        for name, points in series.items()})
