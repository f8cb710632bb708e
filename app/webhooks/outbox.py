"""The webhook outbox: one delivery row per interested endpoint, written with the job event.

app/jobs/lifecycle.py's `add_event` is where every job event is recorded, in the transaction
of the move it belongs to, and it calls `record`: a move that commits has its deliveries, and
one that rolls back has none. The dispatcher sends them later, never inside the move.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import RowMapping, select
from sqlalchemy.orm import Session

from app.models import DeliveryStatus, Job, WebhookDelivery, WebhookEndpoint, utcnow


class EventType(StrEnum):
    """What an endpoint may ask for: `job.<kind>` for these kinds of job events."""

    QUEUED = "job.queued"  # submitted
    STARTED = "job.started"  # an attempt started (each attempt)
    EVALUATION = "job.evaluation"  # an evaluation during training, with its metrics
    RETRYING = "job.retrying"  # an attempt failed and the job is queued again
    SUCCEEDED = "job.succeeded"
    FAILED = "job.failed"
    CANCELLED = "job.cancelled"


_BY_KIND = {event_type.value.removeprefix("job."): event_type for event_type in EventType}


def record(session: Session, job_id: str, kind: str, message: str,
           data: dict[str, Any]) -> None:
    """Queue the event for the endpoints of the job's project that asked for its type."""
    event_type = _BY_KIND.get(kind)
    if event_type is None:
        return
    endpoints = session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.project_id, WebhookEndpoint.event_types)
        .join(Job, Job.project_id == WebhookEndpoint.project_id).where(Job.id == job_id)).all()
    wanted = [endpoint for endpoint in endpoints if event_type in endpoint.event_types]
    if not wanted:
        return
    # The row as this transaction sees it, the move's own UPDATE included; a table select
    # leaves the session's Job objects as they are.
    job = session.execute(select(Job.__table__).where(Job.id == job_id)).mappings().one()
    now = utcnow()
    body = json.dumps(plain_json({"type": event_type, "timestamp": now,
                              "data": summary(job, kind, message, data)}),
                      allow_nan=False, separators=(",", ":"))
    session.add_all(WebhookDelivery(endpoint_id=endpoint.id, project_id=endpoint.project_id,
                                    job_id=job_id, event_type=event_type, body=body,
                                    status=DeliveryStatus.PENDING, next_attempt_at=now)
                    for endpoint in wanted)


def summary(job: RowMapping, kind: str, message: str, data: dict[str, Any]) -> dict[str, Any]:
    """The job as a webhook's `data`: what a receiver needs to act without calling back, and
    the event that caused it."""
    spec = job["spec"] or {}
    error = ({"code": job["error_code"], "message": job["error_message"],
              "hint": job["error_hint"]} if job["error_code"] else None)
    return {"id": job["id"], "project_id": job["project_id"], "name": job["name"],
            "status": job["status"], "task": spec.get("task"), "model": spec.get("model"),
            "attempt": job["attempt"],
            "progress": {"step": job["step"], "total_steps": job["total_steps"],
                         "epoch": job["epoch"]},
            "metrics": job["metrics"], "error": error, "created_at": job["created_at"],
            "started_at": job["started_at"], "finished_at": job["finished_at"],
            "event": {"kind": kind, "message": message, "data": data}}


def plain_json(value: Any) -> Any:
    """JSON-ready: times in ISO 8601 UTC, and a non-finite number (a diverged loss) as null,
    which JSON cannot hold."""
    if isinstance(value, dict):
        return {str(key): plain_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value
