"""What a stream carries: positions in the id sequences, the items, and their SSE wire form.

A job's stream follows two tables, job events and metric points, each with its own id
sequence. Its position is the pair of the last ids it has sent, written `<event_id>.<point_id>`
in every message's `id:`; each message moves one of the two, so the position only grows, and
a reconnect with `Last-Event-ID` resumes after exactly what was received. A project's stream
follows status-change events only: its position is the last event id, written alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel

from app.errors import InvalidRequest
from app.jobs.schemas import MetricPointOut, Progress
from app.models import JobStatus

MAX_ID = 2**31 - 1
EVENT, METRIC, JOB, END = "event", "metric", "job", "end"
_JOB_CURSOR = re.compile(r"([0-9]{1,10})(?:\.([0-9]{1,10}))?")
_EVENT_CURSOR = re.compile(r"[0-9]{1,10}")


@dataclass(frozen=True, slots=True)
class Position:
    """The last job event id and the last metric point id a stream has gone past."""

    events: int = 0
    points: int = 0

    def covers(self, other: Position) -> bool:
        return self.events >= other.events and self.points >= other.points

    def precedes(self, item: Item) -> bool:
        """Whether `item` comes after this position (has not been sent yet)."""
        return item.id > (self.points if item.name == METRIC else self.events)

    def past(self, item: Item) -> Position:
        if item.name == METRIC:
            return Position(self.events, max(self.points, item.id))
        return Position(max(self.events, item.id), self.points)

    def joined(self, other: Position) -> Position:
        return Position(max(self.events, other.events), max(self.points, other.points))


@dataclass(frozen=True, slots=True)
class Item:
    """One row to send, rendered once for every stream that gets it."""

    name: str  # the SSE event name: EVENT, METRIC or JOB
    key: str  # the streams it goes to (job_key or project_key)
    id: int  # the row's id: a job event's (EVENT, JOB) or a metric point's (METRIC)
    data: bytes  # its JSON
    created_at: datetime
    status: JobStatus | None = None  # the status an event moved its job to


class StreamedMetricPoint(MetricPointOut):
    """A metric point as GET /v1/jobs/{id}/metrics shows it, with the series it belongs to."""

    name: str


class JobChange(BaseModel):
    """A job of the project moved to `status`; `progress` is the job's as it is now."""

    id: str
    project_id: str
    status: JobStatus
    progress: Progress
    changed_at: datetime


class EndOfStream(BaseModel):
    job_id: str
    status: JobStatus


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


def project_key(project_id: str | None) -> str:
    """The key of one project's changes; None: every project's (an admin's stream)."""
    return f"project:{project_id}" if project_id is not None else "project:*"


def parse_job_cursor(text: str) -> Position:
    """`<event_id>.<metric_point_id>`, as sent; or an event id alone, as `after` takes it
    (every metric point then follows)."""
    found = _JOB_CURSOR.fullmatch(text.strip())
    position = Position(int(found[1]), int(found[2] or 0)) if found else None
    if position is None or max(position.events, position.points) > MAX_ID:
        raise InvalidRequest("Last-Event-ID must be an id this stream sent, "
                             "'<event_id>.<metric_point_id>'", param="Last-Event-ID")
    return position


def parse_event_cursor(text: str) -> Position:
    found = _EVENT_CURSOR.fullmatch(text.strip())
    if found is None or int(found[0]) > MAX_ID:
        raise InvalidRequest("Last-Event-ID must be an id this stream sent: an event id",
                             param="Last-Event-ID")
    return Position(int(found[0]))


def message(name: str, cursor: str, data: bytes) -> bytes:
    # The JSON is one line: JSON strings escape their line breaks.
    return b"event: %s\nid: %s\ndata: %s\n\n" % (name.encode(), cursor.encode(), data)


def heartbeat(cursor: str | None) -> bytes:
    """A comment that keeps proxies from closing an idle stream; with `cursor`, it also moves
    the client's Last-Event-ID past what this stream has seen (no event is dispatched)."""
    return b": keep-alive\n\n" if cursor is None else b": keep-alive\nid: %s\n\n" % (
        cursor.encode())
