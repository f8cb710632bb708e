"""The TrainerCallback that reports a job's progress, metrics and events to the database.

It runs in the trainer child. Writes are throttled so that a fast job does not hammer the
database, and the same round trip reads the job's status: a cancel request sets
`control.should_training_stop`, and the run then ends as cancelled.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from app.db import transaction
from app.jobs import attempt_settings, lifecycle
from app.models import JobStatus, MetricPoint

logger = logging.getLogger("finetune.trainer")


def _detached(point: MetricPoint) -> MetricPoint:
    """A fresh copy: a point from a rolled-back session cannot be added to another one."""
    return MetricPoint(job_id=point.job_id, step=point.step, epoch=point.epoch,
                       name=point.name, value=point.value)


class JobCancelled(Exception):
    """Raised at the end of a training loop that stopped because the job was cancelled."""


class DatabaseReporter(TrainerCallback):
    def __init__(self, session_factory: sessionmaker[Session], job_id: str, attempt: int,
                 interval_seconds: float) -> None:
        self.session_factory = session_factory
        self.job_id = job_id
        self.interval = interval_seconds
        self.last_write = 0.0
        self.started = time.monotonic()
        self.pending_points: list[MetricPoint] = []
        self.latest: dict[str, dict[str, float]] = {}
        self.cancel_requested = False
        self.first_step = 0
        # The attempt this trainer runs: once the reaper takes the job back, that attempt's
        # writes change nothing.
        self.attempt = attempt

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        try:
            with transaction(self.session_factory) as session:
                lifecycle.add_event(session, self.job_id, kind, message, data)
                if kind == "model_loaded" and data and "compute" in data:
                    attempt_settings.record_compute(session, self.job_id, self.attempt,
                                                    data["compute"])
        except SQLAlchemyError:  # reporting is best-effort: training goes on without it
            logger.warning("could not record event %s: database unreachable", kind)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState,
                       control: TrainerControl, **kwargs: Any) -> None:
        self.started = time.monotonic()
        self.first_step = state.global_step  # after a resume, the steps before are not timed
        self._write(state, control, force=True)

    def on_step_end(self, args: TrainingArguments, state: TrainerState,
                    control: TrainerControl, **kwargs: Any) -> None:
        self._write(state, control, force=False)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        for name, value in (logs or {}).items():
            if name == "epoch" or not isinstance(value, int | float) or not math.isfinite(value):
                continue
            self.pending_points.append(MetricPoint(
                job_id=self.job_id, step=state.global_step, epoch=state.epoch, name=name,
                value=float(value)))
            split = "eval" if name.startswith("eval_") else "train"
            self.latest.setdefault(split, {})[name] = float(value)

    def on_evaluate(self, args: TrainingArguments, state: TrainerState,
                    control: TrainerControl, metrics: dict[str, Any] | None = None,
                    **kwargs: Any) -> None:
        shown = {k: v for k, v in (metrics or {}).items() if isinstance(v, int | float)}
        self.event("evaluation", f"Evaluation at step {state.global_step}",
                   {"step": state.global_step, "epoch": state.epoch, "metrics": shown})
        self._write(state, control, force=True)

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState,
                     control: TrainerControl, **kwargs: Any) -> None:
        epoch = round(state.epoch or 0.0, 4)
        self.event("epoch", f"Epoch {epoch:g} finished at step {state.global_step}",
                   {"epoch": epoch, "step": state.global_step})

    def on_train_end(self, args: TrainingArguments, state: TrainerState,
                     control: TrainerControl, **kwargs: Any) -> None:
        self._write(state, control, force=True)
        if self.cancel_requested:
            raise JobCancelled(f"training stopped at step {state.global_step} on request")

    def _write(self, state: TrainerState, control: TrainerControl, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self.last_write < self.interval:
            return
        self.last_write = now
        total = state.max_steps or None
        eta = None
        timed_steps = state.global_step - self.first_step
        if total and timed_steps > 0:
            eta = (now - self.started) / timed_steps * (total - state.global_step)
        try:
            with transaction(self.session_factory) as session:
                session.add_all(self.pending_points)
                status = lifecycle.report_progress(
                    session, self.job_id, self.attempt, step=state.global_step,
                    total_steps=total, epoch=state.epoch, eta_seconds=eta, latest=self.latest)
        except SQLAlchemyError:  # the points wait for the next write; training goes on
            logger.warning("could not record progress: database unreachable")
            self.pending_points = [_detached(point) for point in self.pending_points]
            return
        self.pending_points = []
        if status == JobStatus.CANCELLING:
            self.cancel_requested = True
            control.should_training_stop = True
