"""jobs.run: claim the job, spawn the trainer child, supervise it, finalize the job.

The task is a supervisor, not a trainer: training runs in a child process in its own
process group, so a crash, an OOM kill or a cancel never takes the worker down, and all
of the child's memory is released when it ends.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown
from celery.worker import state as worker_state
from sqlalchemy.orm import Session, sessionmaker

from app.artifacts import service as artifacts
from app.config import Settings
from app.db import after_commit, transaction
from app.jobs import service as jobs
from app.models import Job
from app.storage import LocalStorage
from worker.celery_app import RUN_JOB
from worker.runner import EXIT_CANCELLED, OUTCOME_FILE
from worker.standby import StandbyTrainer, trainer_env

logger = logging.getLogger("finetune.worker")

POLL_SECONDS = 0.5
KILL_AFTER_TERM_SECONDS = 10.0
LOG_TAIL_LINES = 40


def register_tasks(celery: Celery, settings: Settings,
                   session_factory: sessionmaker[Session]) -> None:
    storage = LocalStorage(settings.storage_dir)
    standby = StandbyTrainer()

    def enqueue(job_id: str) -> None:
        celery.send_task(RUN_JOB, args=[job_id])

    @celery.task(name=RUN_JOB)
    def run_job(job_id: str) -> None:
        try:
            JobSupervisor(settings, session_factory, storage, job_id, standby, enqueue).run()
        finally:
            if not _worker_stopping():
                standby.start()

    worker_ready.connect(lambda **_: standby.start(), weak=False)
    worker_shutdown.connect(lambda **_: standby.stop(), weak=False)


def _worker_stopping() -> bool:
    # Celery stores the exit code there, and a clean one is 0: test against None and False.
    return any(flag is not None and flag is not False
               for flag in (worker_state.should_stop, worker_state.should_terminate))


@dataclass
class ChildResult:
    returncode: int
    outcome: dict[str, Any] | None
    cancel_requested: bool
    oom_killed: bool
    interrupted: bool


class JobSupervisor:
    def __init__(self, settings: Settings, session_factory: sessionmaker[Session],
                 storage: LocalStorage, job_id: str, standby: StandbyTrainer,
                 enqueue: Callable[[str], None]) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.storage = storage
        self.job_id = job_id
        self.standby = standby
        self.enqueue = enqueue

    def run(self) -> None:
        if not self._claim():
            logger.info("job %s is not queued any more; message dropped", self.job_id)
            return
        try:
            result = self._run_child()
            self._finalize(result)
        except Exception as exc:  # the worker must survive and take the next job
            logger.exception("supervising job %s failed", self.job_id)
            self._fail("internal_error", f"the worker failed while running the job: {exc}",
                       "This is a bug of the service; the worker's log has the details.")

    def _claim(self) -> bool:
        with transaction(self.session_factory) as session:
            claimed = jobs.transition(session, self.job_id, expected=("queued",), to="running",
                                      started_at=jobs.utcnow(), worker=socket.gethostname())
            if claimed:
                jobs.add_event(session, self.job_id, "started",
                               f"Job started on worker {socket.gethostname()}")
        return claimed

    def _run_child(self) -> ChildResult:
        work_dir = self.storage.job_work_dir(self.job_id)
        work_dir.mkdir(parents=True, exist_ok=True)
        oom_kills_before = _oom_kill_count()
        child = self.standby.take(self.job_id) or self._spawn()
        cancel_seen_at, interrupted = self._watch(child)
        outcome_path = work_dir / OUTCOME_FILE
        outcome = json.loads(outcome_path.read_text()) if outcome_path.is_file() else None
        oom_killed = (child.returncode == -signal.SIGKILL
                      and _oom_kill_count() > oom_kills_before)
        return ChildResult(child.returncode, outcome, cancel_seen_at is not None, oom_killed,
                           interrupted)

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.storage.job_log_path(self.job_id).open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "worker.runner", "--job-id", self.job_id],
                stdout=log, stderr=subprocess.STDOUT, env=trainer_env(), start_new_session=True)

    def _watch(self, child: subprocess.Popen[bytes]) -> tuple[float | None, bool]:
        """Wait for the child; signal its group after a cancel's grace period or on shutdown.

        Returns when the cancel request was seen, and whether the worker's shutdown ended it.
        """
        cancel_seen_at: float | None = None
        stop_from: float | None = None
        signalled: signal.Signals | None = None
        while child.poll() is None:
            time.sleep(POLL_SECONDS)
            if stop_from is None and _worker_stopping():
                stop_from = time.monotonic()
            if cancel_seen_at is None and self._status() == "cancelling":
                cancel_seen_at = time.monotonic()
                stop_from = min(stop_from or math.inf, cancel_seen_at +
                                self.settings.cancel_grace_seconds)
            if stop_from is None or time.monotonic() < stop_from:
                continue
            if signalled is None:
                signalled = self._signal_group(child, signal.SIGTERM)
            elif (signalled == signal.SIGTERM
                  and time.monotonic() > stop_from + KILL_AFTER_TERM_SECONDS):
                signalled = self._signal_group(child, signal.SIGKILL)
        return cancel_seen_at, _worker_stopping() and cancel_seen_at is None

    def _signal_group(self, child: subprocess.Popen[bytes],
                      signum: signal.Signals) -> signal.Signals:
        logger.info("job %s: sending %s to the trainer's process group", self.job_id,
                    signum.name)
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass
        return signum

    def _status(self) -> str | None:
        with self.session_factory() as session:
            job = session.get(Job, self.job_id)
            return job.status if job else None

    def _finalize(self, result: ChildResult) -> None:
        outcome = result.outcome or {}
        if result.returncode == 0 and outcome.get("status") == "succeeded":
            self._succeed(outcome.get("metrics", {}))
        elif result.interrupted:
            self._requeue()
        elif result.cancel_requested or result.returncode == EXIT_CANCELLED:
            self._cancelled()
        elif outcome.get("status") == "failed":
            self._fail(outcome["code"], outcome["message"], outcome.get("hint"))
        else:
            self._crashed(result.returncode, result.oom_killed)

    def _succeed(self, metrics: dict[str, Any]) -> None:
        with transaction(self.session_factory) as session:
            artifacts.publish_model(session, self.storage, self.job_id,
                                    self.storage.job_work_dir(self.job_id) / "model")
            job = session.get(Job, self.job_id)
            if job is not None:
                job.metrics = {**job.metrics, "final": metrics}
            if jobs.transition(session, self.job_id, expected=("running", "cancelling"),
                               to="succeeded"):
                jobs.add_event(session, self.job_id, "succeeded", "Job succeeded",
                               {"metrics": metrics})

    def _requeue(self) -> None:
        with transaction(self.session_factory) as session:
            if jobs.transition(session, self.job_id, expected=("running",), to="queued",
                               step=0, eta_seconds=None):
                jobs.add_event(session, self.job_id, "interrupted",
                               "The worker shut down; the job is queued again and will start "
                               "over on the next worker")
                after_commit(session, lambda: self.enqueue(self.job_id))

    def _cancelled(self) -> None:
        with transaction(self.session_factory) as session:
            if jobs.transition(session, self.job_id, expected=("running", "cancelling"),
                               to="cancelled"):
                jobs.add_event(session, self.job_id, "cancelled", "Job cancelled")

    def _fail(self, code: str, message: str, hint: str | None,
              data: dict[str, Any] | None = None) -> None:
        with transaction(self.session_factory) as session:
            if jobs.transition(session, self.job_id, expected=("running", "cancelling"),
                               to="failed", error_code=code, error_message=message,
                               error_hint=hint):
                jobs.add_event(session, self.job_id, "failed", message,
                               {"code": code, "hint": hint, **(data or {})})

    def _crashed(self, returncode: int, oom_killed: bool) -> None:
        tail = _log_tail(self.storage.job_log_path(self.job_id))
        if oom_killed:
            self._fail("out_of_memory", "the trainer process was killed by the kernel's "
                       "out-of-memory killer",
                       "Lower hyperparameters.batch_size or max_seq_length, or run the job "
                       "on a worker with more memory.", {"log_tail": tail})
            return
        how = (f"was killed by signal {signal.Signals(-returncode).name}" if returncode < 0
               else f"exited with status {returncode} without reporting an outcome")
        self._fail("worker_crashed", f"the trainer process {how}",
                   "The log tail in the 'failed' event shows the last output; "
                   "submit the job again once the cause is fixed.", {"log_tail": tail})


def _log_tail(path: Path) -> list[str]:
    if not path.is_file():
        return []
    with path.open("rb") as stream:
        stream.seek(max(0, path.stat().st_size - 64 * 1024))
        lines = stream.read().decode("utf-8", "replace").splitlines()
    return lines[-LOG_TAIL_LINES:]


def _oom_kill_count() -> int:
    """How often the kernel's OOM killer has acted in this cgroup (cgroup v2 counts it)."""
    events = Path("/sys/fs/cgroup/memory.events")
    try:
        counts = dict(line.split() for line in events.read_text().splitlines())
        return int(counts.get("oom_kill", "0"))
    except (OSError, ValueError):
        return 0
