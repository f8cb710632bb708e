"""Checkpoints the service writes, records and resumes from.

The Trainer writes `checkpoint-N` into its own folder; once it is complete (on_save) it is
hashed, renamed to `<job>/work/checkpoints/step-N`, put in the store (every file, when the
store is a bucket) and only then recorded in the database with the sha256 of every file. A
resume takes the newest recorded checkpoint whose files still match, fetching from the store
what this machine lacks, so a half-written, damaged or foreign folder is never loaded and a
job resumes on any machine. A checkpoint that finds the disk full is deleted, not recorded, and
ends the attempt with `storage_full`; the ones before it stay.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from app.db import transaction
from app.hashing import sha256_of
from app.jobs import lifecycle
from app.models import Checkpoint, Job, JobAttempt, MetricPoint
from app.storage import LocalStorage, StorageUnavailable
from app.storage.local import disk_space, is_disk_full
from worker.training.distributed import any_rank, is_main_rank, wait_for_all_ranks
from worker.training.errors import DiskFull, TrainingError
from worker.training.events import EventSink

KEEP_LATEST = 2
RECORD_PATIENCE_SECONDS = 30.0
logger = logging.getLogger("finetune.trainer")


class JobInterrupted(Exception):
    """Raised at the end of a training loop stopped by SIGTERM, after its checkpoint."""


class StoreUnreachable(TrainingError):
    """The object store stayed unreachable: the attempt ends, the job resumes later from its
    last complete checkpoint."""

    code = "storage_unavailable"


class CheckpointKeeper(TrainerCallback):
    def __init__(self, session_factory: sessionmaker[Session], job_id: str,
                 storage: LocalStorage, every_seconds: float | None) -> None:
        self.session_factory = session_factory
        self.job_id = job_id
        self.storage = storage
        self.folder = storage.checkpoints_dir(job_id)
        self.every_seconds = every_seconds
        self.last_save = time.monotonic()
        self.stop_requested = False
        self.eval_loss: dict[int, float] = {}

    def request_stop(self) -> None:
        """Save at the end of the current step, then stop (SIGTERM: a deploy or a timeout)."""
        self.stop_requested = True

    def on_train_begin(self, args: TrainingArguments, state: TrainerState,
                       control: TrainerControl, **kwargs: Any) -> None:
        self.last_save = time.monotonic()

    def on_step_end(self, args: TrainingArguments, state: TrainerState,
                    control: TrainerControl, **kwargs: Any) -> None:
        due = (self.every_seconds is not None
               and time.monotonic() - self.last_save >= self.every_seconds)
        due, self.stop_requested = any_rank([due, self.stop_requested], args.device)
        if due or self.stop_requested:
            control.should_save = True
        if self.stop_requested:
            control.should_training_stop = True

    def on_evaluate(self, args: TrainingArguments, state: TrainerState,
                    control: TrainerControl, metrics: dict[str, Any] | None = None,
                    **kwargs: Any) -> None:
        if metrics and isinstance(metrics.get("eval_loss"), int | float):
            self.eval_loss[state.global_step] = float(metrics["eval_loss"])

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> None:
        # Every rank writes its part (its RNG state, say) before the main rank records it.
        wait_for_all_ranks()
        if is_main_rank():
            self._keep(args, state)
        self.last_save = time.monotonic()
        wait_for_all_ranks()

    def _keep(self, args: TrainingArguments, state: TrainerState) -> None:
        written = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not written.is_dir():
            return
        step = state.global_step
        manifest = {path.relative_to(written).as_posix(): sha256_of(path)
                    for path in sorted(written.rglob("*")) if path.is_file()}
        target = self.folder / f"step-{step}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(written, target)
        except OSError as exc:
            if not is_disk_full(exc, self.folder):
                raise
            shutil.rmtree(written, ignore_errors=True)
            raise DiskFull(f"the disk of {self.folder} filled up while keeping the checkpoint "
                           f"at step {step}; it was deleted and {disk_space(self.folder)} "
                           "now") from None
        try:
            self.storage.keep_checkpoint(self.job_id, step, manifest)
        except StorageUnavailable as exc:
            shutil.rmtree(target, ignore_errors=True)
            raise StoreUnreachable(f"the checkpoint at step {step} could not be put in the "
                                   f"object store: {exc.message}") from None
        dropped = self._record(step, manifest)
        if dropped is None:
            # Unrecorded, it would never be resumed from: do not keep it either.
            shutil.rmtree(target, ignore_errors=True)
            dropped = [step]
        for old in dropped:
            try:
                self.storage.drop_checkpoint(self.job_id, old)
            except StorageUnavailable:  # unrecorded objects are never read; they only cost
                logger.warning("checkpoint at step %s is unrecorded but still in the store",
                               old)

    def _record(self, step: int, manifest: dict[str, str]) -> list[int] | None:
        """Record the checkpoint, waiting out a short database outage; training goes on.
        Answers the steps no longer recorded (rotated out), None if this one is not."""
        deadline = time.monotonic() + RECORD_PATIENCE_SECONDS
        while True:
            try:
                with transaction(self.session_factory) as session:
                    session.execute(delete(Checkpoint).where(Checkpoint.job_id == self.job_id,
                                                             Checkpoint.step == step))
                    session.add(Checkpoint(job_id=self.job_id, step=step, files=manifest))
                    lifecycle.add_event(session, self.job_id, "checkpoint",
                                        f"Checkpoint saved at step {step}", {"step": step})
                    return self._rotate(session)
            except SQLAlchemyError:
                if time.monotonic() > deadline:
                    logger.warning("checkpoint at step %s not recorded: database unreachable",
                                   step)
                    return None
                time.sleep(1)

    def on_train_end(self, args: TrainingArguments, state: TrainerState,
                     control: TrainerControl, **kwargs: Any) -> None:
        if self.stop_requested:
            raise JobInterrupted(f"stopped at step {state.global_step} with a checkpoint")

    def _rotate(self, session: Session) -> list[int]:
        """Keep the latest two and the one with the best evaluation loss; answer the others."""
        steps = sorted(session.scalars(select(Checkpoint.step)
                                       .where(Checkpoint.job_id == self.job_id)), reverse=True)
        keep = set(steps[:KEEP_LATEST])
        scored = [step for step in steps if self._loss_at(step) is not None]
        if scored:
            keep.add(min(scored, key=lambda step: self._loss_at(step) or 0.0))
        dropped = sorted(set(steps) - keep)
        if dropped:
            session.execute(delete(Checkpoint).where(Checkpoint.job_id == self.job_id,
                                                     Checkpoint.step.in_(dropped)))
        return dropped

    def _loss_at(self, step: int) -> float | None:
        """The evaluation loss of the weights saved at `step`: the last evaluation before it."""
        earlier = [evaluated for evaluated in self.eval_loss if evaluated <= step]
        return self.eval_loss[max(earlier)] if earlier else None


def resume_point(session_factory: sessionmaker[Session], job_id: str, storage: LocalStorage,
                 events: EventSink) -> tuple[Path, int] | None:
    """The newest recorded checkpoint whose files match their hashes, fetched from the store
    where this machine lacks them; damaged ones skipped."""
    with session_factory() as session:
        recorded = list(session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)
                                        .order_by(Checkpoint.step.desc())))
    for checkpoint in recorded:
        path = storage.checkpoints_dir(job_id) / f"step-{checkpoint.step}"
        try:
            storage.restore_checkpoint(job_id, checkpoint.step, checkpoint.files)
        except StorageUnavailable as exc:  # starting over would throw the training away
            raise StoreUnreachable(f"the checkpoint at step {checkpoint.step} could not be "
                                   f"fetched from the object store: {exc.message}") from None
        problem = _damage(path, checkpoint.files)
        if problem is None:
            return path, checkpoint.step
        events.event("checkpoint_skipped",
                     f"Checkpoint at step {checkpoint.step} is unusable ({problem}); "
                     "trying the one before", {"step": checkpoint.step})
    return None


def mark_resumed(session_factory: sessionmaker[Session], job_id: str, step: int) -> None:
    """Note the resume step on the running attempt, and drop the metric points past it: the
    new attempt logs those steps again."""
    with transaction(session_factory) as session:
        session.execute(delete(MetricPoint).where(MetricPoint.job_id == job_id,
                                                  MetricPoint.step > step))
        job = session.get(Job, job_id)
        if job is not None:
            session.execute(update(JobAttempt).where(
                JobAttempt.job_id == job_id, JobAttempt.number == job.attempt)
                .values(resumed_from_step=step))


def _damage(path: Path, files: dict[str, str]) -> str | None:
    if not path.is_dir():
        return "its folder is missing"
    for relative, expected in files.items():
        file = path / relative
        if not file.is_file():
            return f"{relative} is missing"
        if sha256_of(file) != expected:
            return f"{relative} does not match its recorded sha256"
    return None
