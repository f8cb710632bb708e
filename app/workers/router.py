from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.auth import CallerDep
from app.deps import SessionDep, SessionRoute, SettingsDep
from app.errors import error_responses
from app.pagination import LimitQuery, Page
from app.workers import service
from app.workers.schemas import WorkerOut

router = APIRouter(prefix="/v1/workers", tags=["workers"], route_class=SessionRoute)

# host:pid, as a worker names itself.
WorkerAfterQuery = Annotated[str | None, Query(
    pattern=r"^[A-Za-z0-9._-]{1,255}:[0-9]{1,10}$",
    description="Id of the last worker of the previous page")]


@router.get("", response_model=Page[WorkerOut], responses=error_responses(403, 422))
def list_workers(caller: CallerDep, session: SessionDep, settings: SettingsDep,
                 limit: LimitQuery = 20, after: WorkerAfterQuery = None) -> Page[WorkerOut]:
    """The worker fleet, by id (admin keys only): each worker's host, the device type and
    count it offers, the queues it consumes, whether it is idle, busy (with its job) or
    offline, and its last heartbeat."""
    workers, has_more = service.list_page(session, caller, settings, limit, after)
    return Page[WorkerOut](data=[WorkerOut.from_worker(worker, live)
                                 for worker, live in workers], has_more=has_more)
