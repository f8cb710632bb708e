from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session, sessionmaker

from app.auth import Caller, CallerDep
from app.config import Settings
from app.db import transaction
from app.deps import ReadSessionDep, SessionDep, SessionRoute, SettingsDep
from app.errors import InvalidRequest, error_responses
from app.idempotency import IdempotencyHeader
from app.jobs import service
from app.jobs.schemas import EventOut, EventPage, JobOut, MetricPointOut, MetricsOut
from app.jobs.spec import JobSpec
from app.models import Job, JobStatus
from app.pagination import AfterQuery, LimitQuery, Page
from app.params import JobId
from app.streams import responses as streams
from app.streams.params import (
    CHANGE_STREAM_ANSWER,
    JOB_STREAM_ANSWER,
    EventCursorHeader,
    JobCursorHeader,
    StreamQuery,
)
from app.workers.service import waiting_for

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=SessionRoute)

StatusQuery = Annotated[JobStatus | None, Query(description="Only jobs in this status")]


@router.post("", status_code=201, response_model=JobOut,
             responses=error_responses(400, 409, 422, 503))
def create_job(spec: JobSpec, request: Request, caller: CallerDep, session: SessionDep,
               settings: SettingsDep, idempotency_key: IdempotencyHeader = None) -> JobOut:
    """Submit a fine-tuning job to the key's project; it starts in status `queued`."""
    job = service.create(session, caller, spec, request.app.state.broker.enqueue, settings,
                         idempotency_key)
    return _outs(session, settings, [job])[0]


def _outs(session: Session, settings: Settings, jobs: list[Job]) -> list[JobOut]:
    attempts = service.attempts(session, jobs)
    prefixes = service.key_prefixes(session, jobs)
    waiting = waiting_for(session, settings, jobs)
    return [JobOut.from_job(job, attempts[job.id], prefixes[job.api_key_id], waiting.get(job.id))
            for job in jobs]


@router.get("", response_model=Page[JobOut],
            responses={**error_responses(422), **CHANGE_STREAM_ANSWER})
async def list_jobs(request: Request, caller: CallerDep, status: StatusQuery = None,
                    limit: LimitQuery = 20, after: AfterQuery = None, stream: StreamQuery = False,
                    last_event_id: EventCursorHeader = None) -> Page[JobOut] | Response:
    """List the project's jobs (an admin's: every project's), newest first; or, with
    `stream=true`, follow their status changes live (`status`: only the moves to it;
    `limit` applies to pages only)."""
    state = request.app.state
    if stream:
        if "after" in request.query_params:
            raise InvalidRequest("'after' names a job of a page; a stream starts now, or "
                                 "after its Last-Event-ID", param="after")
        return await streams.change_stream(state, caller, status, last_event_id)
    return await to_thread.run_sync(_job_page, state.session_factory, state.settings, caller,
                                    status, limit, after)


def _job_page(session_factory: sessionmaker[Session], settings: Settings, caller: Caller,
              status: JobStatus | None, limit: int, after: str | None) -> Page[JobOut]:
    with transaction(session_factory) as session:
        jobs, has_more = service.list_page(session, caller, status, limit, after)
        return Page[JobOut](data=_outs(session, settings, jobs), has_more=has_more)


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(404))
def get_job(job_id: JobId, caller: CallerDep, session: ReadSessionDep,
            settings: SettingsDep) -> JobOut:
    """Get a job: status, progress, metrics, error; for a queued job that no live worker can
    run, what it is waiting for."""
    return _outs(session, settings, [service.get(session, caller, job_id)])[0]


@router.post("/{job_id}/cancel", response_model=JobOut, responses=error_responses(404, 409))
def cancel_job(job_id: JobId, caller: CallerDep, session: SessionDep,
               settings: SettingsDep) -> JobOut:
    """Cancel a job: a queued job never starts, a running one stops at its next step."""
    return _outs(session, settings, [service.cancel(session, caller, job_id)])[0]


@router.get("/{job_id}/events", response_model=EventPage,
            responses={**error_responses(404, 422), **JOB_STREAM_ANSWER})
async def list_events(job_id: JobId, request: Request, caller: CallerDep,
                      after: Annotated[int | None, Query(ge=0, le=2**31 - 1,
                                                        description="Last event id seen")] = None,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                      stream: StreamQuery = False,
                      last_event_id: JobCursorHeader = None) -> EventPage | Response:
    """The job's timeline, oldest first; poll with `after` to follow it, or follow it live
    with `stream=true` (events and metric points, after `after` or the Last-Event-ID;
    `limit` applies to pages only)."""
    state = request.app.state
    if stream:
        return await streams.job_stream(state, caller, job_id, after, last_event_id)
    return await to_thread.run_sync(_event_page, state.session_factory, caller, job_id, after,
                                    limit)


def _event_page(session_factory: sessionmaker[Session], caller: Caller, job_id: str,
                after: int | None, limit: int) -> EventPage:
    with transaction(session_factory) as session:
        events, has_more = service.events(session, caller, job_id, after, limit)
        return EventPage(data=[EventOut.from_event(e) for e in events], has_more=has_more)


@router.get("/{job_id}/metrics", response_model=MetricsOut, responses=error_responses(404))
def get_metrics(job_id: JobId, caller: CallerDep, session: SessionDep) -> MetricsOut:
    """Every logged metric as a time series by step."""
    series = service.metric_series(session, caller, job_id)
    return MetricsOut(job_id=job_id, series={
        name: [MetricPointOut(step=p.step, epoch=p.epoch, value=p.value) for p in points]
        for name, points in series.items()})
