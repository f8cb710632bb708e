from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.auth import CallerDep
from app.deps import SessionDep, SessionRoute, SettingsDep
from app.errors import error_responses
from app.idempotency import IdempotencyHeader
from app.jobs import service
from app.jobs.schemas import EventOut, EventPage, JobOut, MetricPointOut, MetricsOut
from app.jobs.spec import JobSpec
from app.models import Job, JobStatus
from app.pagination import AfterQuery, LimitQuery, Page
from app.params import JobId

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=SessionRoute)

StatusQuery = Annotated[JobStatus | None, Query(description="Only jobs in this status")]


@router.post("", status_code=201, response_model=JobOut,
             responses=error_responses(400, 409, 422, 503))
def create_job(spec: JobSpec, request: Request, caller: CallerDep, session: SessionDep,
               settings: SettingsDep, idempotency_key: IdempotencyHeader = None) -> JobOut:
    """Submit a fine-tuning job to the key's project; it starts in status `queued`."""
    job = service.create(session, caller, spec, request.app.state.broker.enqueue, settings,
                         idempotency_key)
    return _outs(session, [job])[0]


def _outs(session: SessionDep, jobs: list[Job]) -> list[JobOut]:
    attempts = service.attempts(session, [job.id for job in jobs])
    prefixes = service.key_prefixes(session, jobs)
    return [JobOut.from_job(job, attempts[job.id], prefixes[job.api_key_id]) for job in jobs]


@router.get("", response_model=Page[JobOut], responses=error_responses(422))
def list_jobs(caller: CallerDep, session: SessionDep, status: StatusQuery = None,
              limit: LimitQuery = 20, after: AfterQuery = None) -> Page[JobOut]:
    """List the project's jobs (an admin's: every project's), newest first."""
    jobs, has_more = service.list_page(session, caller, status, limit, after)
    return Page[JobOut](data=_outs(session, jobs), has_more=has_more)


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(404))
def get_job(job_id: JobId, caller: CallerDep, session: SessionDep) -> JobOut:
    """Get a job: status, progress, metrics, error."""
    return _outs(session, [service.get(session, caller, job_id)])[0]


@router.post("/{job_id}/cancel", response_model=JobOut, responses=error_responses(404, 409))
def cancel_job(job_id: JobId, caller: CallerDep, session: SessionDep) -> JobOut:
    """Cancel a job: a queued job never starts, a running one stops at its next step."""
    return _outs(session, [service.cancel(session, caller, job_id)])[0]


@router.get("/{job_id}/events", response_model=EventPage, responses=error_responses(404, 422))
def list_events(job_id: JobId, caller: CallerDep, session: SessionDep,
                after: Annotated[int | None, Query(ge=0, le=2**31 - 1,
                                                  description="Last event id seen")] = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> EventPage:
    """The job's timeline, oldest first; poll with `after` to follow it."""
    events, has_more = service.events(session, caller, job_id, after, limit)
    return EventPage(data=[EventOut.from_event(e) for e in events], has_more=has_more)


@router.get("/{job_id}/metrics", response_model=MetricsOut, responses=error_responses(404))
def get_metrics(job_id: JobId, caller: CallerDep, session: SessionDep) -> MetricsOut:
    """Every logged metric as a time series by step."""
    series = service.metric_series(session, caller, job_id)
    return MetricsOut(job_id=job_id, series={
        name: [MetricPointOut(step=p.step, epoch=p.epoch, value=p.value) for p in points]
        for name, points in series.items()})
