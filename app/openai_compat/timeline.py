"""A job's events and checkpoints as OpenAI lists them: newest first, `after` the id of the
last item seen.

Events are the job's own timeline (`ftevent-<n>`) merged with its training-loss points
(`ftevent-m<n>`, type `metrics`, "Step 8/16: training loss=1.2345"), in the order they were
written. Checkpoints (`ftckpt-<n>`) are the ones the service keeps for resuming, each with the
training and validation loss last logged at or before its step.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from app.auth import Caller
from app.errors import InvalidRequest
from app.jobs import service as jobs
from app.jobs.spec import JobSpec
from app.models import Checkpoint, Job, JobEvent, MetricPoint
from app.openai_compat.jobs import fine_tuned_model
from app.openai_compat.schemas import (
    CheckpointMetrics,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
)

_EVENT_ID = re.compile(r"^ftevent-(m?)([0-9]{1,10})$")
_CHECKPOINT_ID = re.compile(r"^ftckpt-([0-9]{1,10})$")
_MAX_ROW_ID = 2**31 - 1  # the integer keys' range (PostgreSQL refuses a larger value)
# Where two items were written at the same moment, the timeline's event comes first.
_EVENT_RANK, _POINT_RANK = 1, 0
_TRAIN_LOSS, _VALID_LOSS = "loss", "eval_loss"
_ERRORS = frozenset({"failed", "attempt_failed"})
_WARNINGS = frozenset({"retrying", "lease_expired", "checkpoint_skipped", "interrupted",
                       "settings_changed", "resent", "cancelling"})
_TIMINGS = ("_runtime", "_per_second")

Anchor = tuple[datetime, int, int]  # created_at, rank, id of the last item seen


def events_page(session: Session, caller: Caller, job_id: str, after: str | None,
                limit: int) -> tuple[list[FineTuningJobEvent], bool]:
    job = jobs.get(session, caller, job_id)
    anchor = _event_anchor(session, job_id, after) if after is not None else None
    events = _newest(session, select(JobEvent).where(JobEvent.job_id == job_id), JobEvent,
                     _EVENT_RANK, anchor, limit + 1)
    losses = _newest(session, select(MetricPoint).where(MetricPoint.job_id == job_id,
                                                        MetricPoint.name == _TRAIN_LOSS),
                     MetricPoint, _POINT_RANK, anchor, limit + 1)
    merged = sorted([(_key(event, _EVENT_RANK), _from_event(event)) for event in events]
                    + [(_key(point, _POINT_RANK), _from_loss(point, job)) for point in losses],
                    key=lambda pair: pair[0], reverse=True)
    return [item for _, item in merged[:limit]], len(merged) > limit


def _event_anchor(session: Session, job_id: str, after: str) -> Anchor:
    match = _EVENT_ID.fullmatch(after)
    model: Any = MetricPoint if match and match.group(1) else JobEvent
    row = _row(session, model, match.group(2)) if match else None
    if row is None or row.job_id != job_id:
        raise InvalidRequest(f"'after' names no event of job {job_id}: {after}", param="after")
    return _key(row, _POINT_RANK if model is MetricPoint else _EVENT_RANK)


def _row(session: Session, model: Any, digits: str) -> Any:
    return session.get(model, int(digits)) if int(digits) <= _MAX_ROW_ID else None


def _key(row: JobEvent | MetricPoint, rank: int) -> Anchor:
    return row.created_at, rank, row.id


def _newest(session: Session, statement: Select[Any], model: Any, rank: int,
            anchor: Anchor | None, count: int) -> Sequence[Any]:
    """Up to `count` rows of `statement`, newest first, from those that come after `anchor`
    in the merged order (created_at, rank, id), descending."""
    if anchor is not None:
        at, anchor_rank, anchor_id = anchor
        if rank < anchor_rank:
            statement = statement.where(model.created_at <= at)
        elif rank > anchor_rank:
            statement = statement.where(model.created_at < at)
        else:
            statement = statement.where(or_(model.created_at < at, and_(
                model.created_at == at, model.id < anchor_id)))
    return session.scalars(statement.order_by(model.created_at.desc(), model.id.desc())
                           .limit(count)).all()


def _from_event(event: JobEvent) -> FineTuningJobEvent:
    data = event.data or {}
    level = "error" if event.kind in _ERRORS else "warn" if event.kind in _WARNINGS else "info"
    if event.kind == "evaluation":
        figures = {f"valid_{name.removeprefix('eval_')}": value
                   for name, value in (data.get("metrics") or {}).items()
                   if not name.endswith(_TIMINGS)}
        return FineTuningJobEvent(id=f"ftevent-{event.id}", created_at=_unix(event.created_at),
                                  level=level, message=event.message, type="metrics",
                                  data={"step": data.get("step"), "epoch": data.get("epoch"),
                                        **figures})
    return FineTuningJobEvent(id=f"ftevent-{event.id}", created_at=_unix(event.created_at),
                              level=level, message=event.message, type="message",
                              data={"kind": event.kind, **data})


def _from_loss(point: MetricPoint, job: Job) -> FineTuningJobEvent:
    of_total = f"/{job.total_steps}" if job.total_steps else ""
    return FineTuningJobEvent(
        id=f"ftevent-m{point.id}", created_at=_unix(point.created_at), level="info",
        message=f"Step {point.step}{of_total}: training loss={point.value:.4f}",
        type="metrics", data={"step": point.step, "train_loss": point.value,
                              "total_steps": job.total_steps})


def checkpoints_page(session: Session, caller: Caller, job_id: str, after: str | None,
                     limit: int) -> tuple[list[FineTuningJobCheckpoint], bool]:
    job = jobs.get(session, caller, job_id)
    statement = select(Checkpoint).where(Checkpoint.job_id == job_id)
    if after is not None:
        match = _CHECKPOINT_ID.fullmatch(after)
        anchor = _row(session, Checkpoint, match.group(1)) if match else None
        if anchor is None or anchor.job_id != job_id:
            raise InvalidRequest(f"'after' names no checkpoint of job {job_id}: {after}",
                                 param="after")
        statement = statement.where(Checkpoint.step < anchor.step)
    rows = session.scalars(statement.order_by(Checkpoint.step.desc()).limit(limit + 1)).all()
    page = rows[:limit]
    losses = _losses(session, job_id, max((row.step for row in page), default=0))
    model = fine_tuned_model(job, JobSpec.from_stored(job.spec, job.spec_version))
    return [FineTuningJobCheckpoint(
        id=f"ftckpt-{row.id}", created_at=_unix(row.created_at),
        fine_tuned_model_checkpoint=f"{model}:ckpt-step-{row.step}", fine_tuning_job_id=job.id,
        step_number=row.step,
        metrics=CheckpointMetrics(step=row.step, train_loss=_at(losses[_TRAIN_LOSS], row.step),
                                  valid_loss=_at(losses[_VALID_LOSS], row.step)))
        for row in page], len(rows) > limit


def _losses(session: Session, job_id: str,
            up_to: int) -> dict[str, tuple[list[int], list[float]]]:
    """Each loss series up to step `up_to`: its steps and values, by step."""
    series: dict[str, tuple[list[int], list[float]]] = {_TRAIN_LOSS: ([], []),
                                                        _VALID_LOSS: ([], [])}
    for name, step, value in session.execute(
            select(MetricPoint.name, MetricPoint.step, MetricPoint.value)
            .where(MetricPoint.job_id == job_id, MetricPoint.step <= up_to,
                   MetricPoint.name.in_(series)).order_by(MetricPoint.step, MetricPoint.id)):
        steps, values = series[name]
        steps.append(step)
        values.append(value)
    return series


def _at(series: tuple[list[int], list[float]], step: int) -> float | None:
    """The value last logged at or before `step`."""
    steps, values = series
    position = bisect.bisect_right(steps, step)
    return values[position - 1] if position else None


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())
