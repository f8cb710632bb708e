"""What the streams read from the database, in threads: how far the id sequences may be read,
each poll's new rows, and one stream's rows when it (re)starts or ends.

Ids are handed out when a row is inserted, not when it commits: a transaction that took id 10
may commit after the one that took id 11. A reader that went past 11 would never see 10. So
the poller reads only up to a *safe* position. On PostgreSQL every transaction that writes
`job_event` or `metric_point` holds a ROW EXCLUSIVE lock on the table from before it takes an
id until it ends; a position read together with the list of those writers becomes safe once
each of them has ended, since any row below it is then committed or gone. Such transactions
last milliseconds, so a position is usually safe on the next poll, or at once when nobody was
writing; one held open longer than LOCK_WAIT_LIMIT_SECONDS stops holding the streams back (it
is logged). SQLite runs one writing transaction at a time, so its ids commit in order.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from app.auth import Caller
from app.db import transaction
from app.jobs import lifecycle, service
from app.jobs.schemas import EventOut, JobOut
from app.models import Job, JobEvent, JobStatus, MetricPoint
from app.streams.items import (
    EVENT,
    JOB,
    METRIC,
    Item,
    JobChange,
    Position,
    StreamedMetricPoint,
    job_key,
    project_key,
)

logger = logging.getLogger("finetune.streams")

ROWS_PER_READ = 2000
LOCK_WAIT_LIMIT_SECONDS = 5.0

# The status each status-changing event kind moves its job to (the last event of an edge).
EVENT_STATUS: dict[str, JobStatus] = {edge.events[-1]: edge.target
                                      for edge in lifecycle.EDGES.values()
                                      if edge.target is not None}
_STATUS_KINDS = tuple(EVENT_STATUS)

_EVENT_COLUMNS = (JobEvent.id, JobEvent.job_id, JobEvent.kind, JobEvent.message, JobEvent.data,
                  JobEvent.created_at)
_POINT_COLUMNS = (MetricPoint.id, MetricPoint.job_id, MetricPoint.name, MetricPoint.step,
                  MetricPoint.epoch, MetricPoint.value, MetricPoint.created_at)
_NEWEST_AND_WRITERS = text("""
    SELECT (SELECT coalesce(max(id), 0) FROM job_event) AS events,
           (SELECT coalesce(max(id), 0) FROM metric_point) AS points,
           ARRAY(SELECT DISTINCT virtualtransaction FROM pg_locks
                 WHERE database = (SELECT oid FROM pg_database
                                   WHERE datname = current_database())
                   AND relation IN ('job_event'::regclass, 'metric_point'::regclass)
                   AND mode = 'RowExclusiveLock') AS writers
""")


@dataclass(frozen=True)
class _Candidate:
    position: Position
    writers: frozenset[str]
    seen_at: float


class SafeHorizon:
    """The newest position below which no row can still appear. Used by one thread at a time."""

    def __init__(self) -> None:
        self.position: Position | None = None
        self._candidates: deque[_Candidate] = deque()

    def advance(self, connection: Connection) -> Position | None:
        now = time.monotonic()
        newest, writers = _newest_and_writers(connection)
        latest = self._candidates[-1].position if self._candidates else self.position
        if latest is None or not latest.covers(newest):
            self._candidates.append(_Candidate(newest, writers, now))
        # A candidate is safe once its writers have all ended. A later candidate's writers
        # include every earlier one's that is still running, so safety goes oldest first.
        safe = -1
        for index, candidate in enumerate(self._candidates):
            if candidate.writers.isdisjoint(writers):
                safe = index
            elif now - candidate.seen_at >= LOCK_WAIT_LIMIT_SECONDS:
                logger.warning("a transaction has held job_event or metric_point for over %ss; "
                               "streams go past its rows' ids", LOCK_WAIT_LIMIT_SECONDS)
                safe = index
        for _ in range(safe + 1):
            reached = self._candidates.popleft().position
            self.position = reached if self.position is None else self.position.joined(reached)
        return self.position


def _newest_and_writers(connection: Connection) -> tuple[Position, frozenset[str]]:
    if connection.dialect.name == "postgresql":
        row = connection.execute(_NEWEST_AND_WRITERS).one()
        return Position(row.events, row.points), frozenset(row.writers)
    events = connection.scalar(select(func.coalesce(func.max(JobEvent.id), 0)))
    points = connection.scalar(select(func.coalesce(func.max(MetricPoint.id), 0)))
    return Position(events or 0, points or 0), frozenset()


@dataclass(frozen=True)
class Batch:
    """One poll: the items between the previous position and `reached`."""

    reached: Position
    items: list[Item]
    # The safe position was not reached (too many rows for one read): poll again at once.
    more: bool


def read_batch(connection: Connection, horizon: SafeHorizon,
               start: Position | None) -> Batch | None:
    """Every job's events, metric points and status changes after `start`, as far as is safe;
    None while nothing is safe yet. With no `start` (the first poll), only the position."""
    safe = horizon.advance(connection)
    if safe is None or start is None:
        return None if safe is None else Batch(safe, [], more=False)
    events = connection.execute(
        select(*_EVENT_COLUMNS).where(JobEvent.id > start.events, JobEvent.id <= safe.events)
        .order_by(JobEvent.id).limit(ROWS_PER_READ)).all()
    points = connection.execute(
        select(*_POINT_COLUMNS).where(MetricPoint.id > start.points,
                                      MetricPoint.id <= safe.points)
        .order_by(MetricPoint.id).limit(ROWS_PER_READ)).all()
    reached = Position(events[-1].id if len(events) == ROWS_PER_READ else safe.events,
                       points[-1].id if len(points) == ROWS_PER_READ else safe.points)
    changes = [event for event in events if event.kind in EVENT_STATUS]
    with Session(bind=connection) as session:
        jobs = _jobs(session, {event.job_id for event in changes})
        items = [*_merged(_event_items(events), _point_items(points)),
                 *(_change_item(event, jobs[event.job_id]) for event in changes
                   if event.job_id in jobs)]
    return Batch(reached, items, more=reached != safe)


def job_status(session_factory: sessionmaker[Session], caller: Caller, job_id: str) -> JobStatus:
    """The status of the caller's job (NotFound when it is not the caller's)."""
    with transaction(session_factory) as session:
        return service.get(session, caller, job_id).status


def job_rows(session_factory: sessionmaker[Session], job_id: str, after: Position,
             until: Position | None) -> tuple[list[Item], bool]:
    """One job's events and metric points after `after` (up to `until`), at most
    ROWS_PER_READ of each; and whether there are more."""
    event_range = [JobEvent.id > after.events]
    point_range = [MetricPoint.id > after.points]
    if until is not None:
        event_range.append(JobEvent.id <= until.events)
        point_range.append(MetricPoint.id <= until.points)
    with transaction(session_factory) as session:
        events = session.execute(select(*_EVENT_COLUMNS).where(JobEvent.job_id == job_id,
                                                               *event_range)
                                 .order_by(JobEvent.id).limit(ROWS_PER_READ)).all()
        points = session.execute(select(*_POINT_COLUMNS).where(MetricPoint.job_id == job_id,
                                                               *point_range)
                                 .order_by(MetricPoint.id).limit(ROWS_PER_READ)).all()
    more = ROWS_PER_READ in (len(events), len(points))
    return list(_merged(_event_items(events), _point_items(points))), more


def change_rows(session_factory: sessionmaker[Session], caller: Caller, after: Position,
                until: Position) -> tuple[list[Item], bool]:
    """The status changes of the caller's jobs between `after` and `until`, at most
    ROWS_PER_READ; and whether there are more."""
    with transaction(session_factory) as session:
        rows = session.execute(caller.visible(
            select(*_EVENT_COLUMNS, Job).join(Job, Job.id == JobEvent.job_id)
            .where(JobEvent.id > after.events, JobEvent.id <= until.events,
                   JobEvent.kind.in_(_STATUS_KINDS)), Job)
            .order_by(JobEvent.id).limit(ROWS_PER_READ)).all()
        items = [_change_item(row, row.Job) for row in rows]
    return items, len(rows) == ROWS_PER_READ


def _jobs(session: Session, job_ids: set[str]) -> dict[str, Job]:
    if not job_ids:
        return {}
    return {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(job_ids)))}


def _merged(events: list[Item], points: list[Item]) -> Iterable[Item]:
    # In time order across the two tables; each keeps its own id order.
    return heapq.merge(events, points, key=lambda item: item.created_at)


def _event_items(rows: Sequence[Row[Any]]) -> list[Item]:
    return [Item(EVENT, job_key(row.job_id), row.id, EventOut(
        id=row.id, kind=row.kind, message=row.message, data=row.data,
        created_at=row.created_at).model_dump_json().encode(), row.created_at,
        EVENT_STATUS.get(row.kind)) for row in rows]


def _point_items(rows: Sequence[Row[Any]]) -> list[Item]:
    return [Item(METRIC, job_key(row.job_id), row.id, StreamedMetricPoint(
        name=row.name, step=row.step, epoch=row.epoch, value=row.value)
        .model_dump_json().encode(), row.created_at) for row in rows]


def _change_item(event: Row[Any], job: Job) -> Item:
    status = EVENT_STATUS[event.kind]
    # The progress figures of the API's job object, as the job stands now.
    progress = JobOut.from_job(job, [], None).progress
    change = JobChange(id=job.id, project_id=job.project_id, status=status, progress=progress,
                       changed_at=event.created_at)
    return Item(JOB, project_key(job.project_id), event.id, change.model_dump_json().encode(),
                event.created_at, status)
