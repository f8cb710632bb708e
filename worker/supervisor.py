"""One attempt of a job: claim it, run the trainer child, hold the lease, finalize.

The supervisor is not a trainer: training runs in a child process in its own process group,
so a crash, an OOM kill or a cancel never takes the worker down, and all of the child's
memory is released when it ends.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket

# Fixed argv, no shell: the trainer module.
import subprocess  # nosec B404
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.artifacts import service as artifacts
from app.config import Settings
from app.db import transaction
from app.error_codes import hint_for, is_retryable
from app.jobs import lifecycle
from app.jobs import service as jobs
from app.models import Artifact, Job
from app.processes import die_with_parent
from app.storage import LocalStorage
from worker.runner import OUTCOME_FILE
from worker.standby import StandbyTrainer, trainer_env

logger = logging.getLogger("finetune.worker")

POLL_SECONDS = 0.5
# The trainer itself stops on a cancel at its next progress write; the supervisor's own look
# at the status only starts the grace period, so it need not cost a query every poll.
STATUS_EVERY_SECONDS = 2.0
KILL_AFTER_TERM_SECONDS = 30.0
LOG_TAIL_LINES = 40


@dataclass
class Attempt:
    """What happened to the trainer child, as the supervisor saw it."""

    returncode: int = 0
    outcome: dict[str, Any] | None = None
    cancelled: bool = False
    interrupted: bool = False
    timed_out: bool = False
    lease_lost: bool = False
    oom_killed: bool = False
    runtime_seconds: float = 0.0


class JobSupervisor:
    def __init__(self, settings: Settings, session_factory: sessionmaker[Session],
                 storage: LocalStorage, job_id: str, standby: StandbyTrainer,
                 enqueue: Callable[[str], None], is_stopping: Callable[[], bool]) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.storage = storage
        self.job_id = job_id
        self.standby = standby
        self.enqueue = enqueue
        self.is_stopping = is_stopping
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.number = 0
        self.status_checked_at = 0.0

    def run(self) -> None:
        if not self._claim():
            logger.info("job %s is not queued any more; message dropped", self.job_id)
            return
        try:
            attempt = self._run_child()
            self._finalize(attempt)
        except Exception as exc:  # the worker must survive and take the next job
            logger.exception("supervising job %s failed", self.job_id)
            self._fail("internal_error", f"the worker failed while running the job: {exc}")

    def _claim(self) -> bool:
        with transaction(self.session_factory) as session:
            attempt = lifecycle.claim(session, self.job_id, self.owner, socket.gethostname(),
                                      self.settings.lease_seconds)
            self.number = attempt.number if attempt else 0
        return attempt is not None

    def _run_child(self) -> Attempt:
        work_dir = self.storage.job_work_dir(self.job_id)
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / OUTCOME_FILE).unlink(missing_ok=True)
        oom_kills_before = _oom_kill_count()
        started = time.monotonic()
        child = self.standby.take(self.job_id) or self._spawn()
        attempt = self._watch(child)
        attempt.returncode = child.returncode
        attempt.runtime_seconds = time.monotonic() - started
        outcome_path = work_dir / OUTCOME_FILE
        attempt.outcome = json.loads(outcome_path.read_text()) if outcome_path.is_file() else None
        attempt.oom_killed = (child.returncode == -signal.SIGKILL
                              and _oom_kill_count() > oom_kills_before)
        return attempt

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.storage.job_log_path(self.job_id).open("ab") as log:
            # Argv is sys.executable, a module, a job id.
            return subprocess.Popen(  # nosec B603
                [sys.executable, "-m", "worker.runner", "--job-id", self.job_id],
                stdout=log, stderr=subprocess.STDOUT, env=trainer_env(), start_new_session=True,
                # A trainer whose worker is gone must not train beside the next attempt.
                preexec_fn=die_with_parent(signal.SIGKILL))

    def _watch(self, child: subprocess.Popen[bytes]) -> Attempt:
        """Wait for the child, renewing the lease; stop it on cancel, shutdown or timeout.

        A stop is SIGTERM to the child's group (the trainer saves a checkpoint and exits),
        then SIGKILL if it has not exited in time. A lost lease kills it at once: another
        worker owns the job now.
        """
        attempt = Attempt()
        job = self._job()
        budget = self._runtime_budget(job)
        started = last_renewal = time.monotonic()
        stop_at: float | None = None
        term_sent_at: float | None = None
        while child.poll() is None:
            time.sleep(POLL_SECONDS)
            now = time.monotonic()
            if now - last_renewal >= self.settings.lease_seconds / 4:
                renewed = self._renew_lease()
                if renewed is False:
                    attempt.lease_lost = True
                    _signal_group(child, signal.SIGKILL)
                    child.wait()
                    break
                last_renewal = now if renewed else last_renewal
            if stop_at is None:
                stop_at = self._stop_time(attempt, now, started, budget)
            if stop_at is not None and now >= stop_at and term_sent_at is None:
                _signal_group(child, signal.SIGTERM)
                term_sent_at = now
            elif term_sent_at is not None and now - term_sent_at > KILL_AFTER_TERM_SECONDS:
                _signal_group(child, signal.SIGKILL)
        return attempt

    def _stop_time(self, attempt: Attempt, now: float, started: float,
                   budget: float) -> float | None:
        """When to signal the child, once a reason to stop it has appeared."""
        if self.is_stopping():
            attempt.interrupted = True
            return now
        if now - started >= budget:
            attempt.timed_out = True
            return now
        if now - self.status_checked_at >= STATUS_EVERY_SECONDS:
            self.status_checked_at = now
            if self._status() == "cancelling":
                attempt.cancelled = True
                return now + self.settings.cancel_grace_seconds
        return None

    def _runtime_budget(self, job: Job | None) -> float:
        limit = (job.spec.get("max_runtime_seconds") if job else None) or math.inf
        limit = min(limit, self.settings.max_job_seconds)
        return max(0.0, limit - (job.runtime_seconds if job else 0.0))

    def _renew_lease(self) -> bool | None:
        """True when renewed, False when the job is no longer ours, None when unknown."""
        try:
            with transaction(self.session_factory) as session:
                return lifecycle.renew_lease(session, self.job_id, self.owner,
                                             self.settings.lease_seconds)
        except SQLAlchemyError:
            logger.warning("job %s: could not renew the lease (database unreachable)",
                           self.job_id)
            return None

    def _status(self) -> str | None:
        job = self._job()
        return job.status if job else None

    def _job(self) -> Job | None:
        try:
            with self.session_factory() as session:
                return session.get(Job, self.job_id)
        except SQLAlchemyError:
            return None

    def _finalize(self, attempt: Attempt) -> None:
        if attempt.lease_lost:
            logger.warning("job %s: lease lost; another worker owns it now", self.job_id)
            return
        outcome = attempt.outcome or {}
        status = outcome.get("status")
        # The trainer may have stopped on a cancel or a SIGTERM before the supervisor saw why.
        attempt.cancelled |= status == "cancelled" or self._status() == "cancelling"
        attempt.interrupted |= status == "interrupted" and not attempt.timed_out
        if attempt.returncode == 0 and status == "succeeded":
            self._succeed(outcome.get("metrics", {}), attempt)
        elif attempt.cancelled:
            self._end(attempt, "cancelled", lambda session: self._cancel(session))
        elif attempt.timed_out:
            self._end(attempt, "timeout", lambda session: self._fail_in(
                session, "timeout", "the job trained longer than its max_runtime_seconds; "
                "a checkpoint was saved"), error_code="timeout")
        elif attempt.interrupted:
            self._end(attempt, "interrupted", lambda session: lifecycle.requeue(
                session, self.job_id, expected=("running",), kind="interrupted",
                message="The worker shut down; the job is queued again and resumes from its "
                        "last checkpoint on the next worker", enqueue=self.enqueue))
        elif status == "failed" and not is_retryable(outcome["code"]):
            self._end(attempt, "failed", lambda session: self._fail_in(
                session, outcome["code"], outcome["message"], outcome.get("hint")),
                error_code=outcome["code"])
        else:
            self._retry(attempt, outcome)

    def _retry(self, attempt: Attempt, outcome: dict[str, Any]) -> None:
        tail = _log_tail(self.storage.job_log_path(self.job_id))
        if outcome.get("status") == "failed":  # a retryable failure the trainer reported
            kind, code, message = outcome["code"], outcome["code"], outcome["message"]
        elif attempt.oom_killed:
            kind, code = "out_of_memory", "out_of_memory"
            message = "the trainer process was killed by the kernel's out-of-memory killer"
        else:
            code = "worker_crashed"
            kind = "killed" if attempt.returncode == -signal.SIGKILL else "crashed"
            how = (f"was killed by signal {_signal_name(-attempt.returncode)}"
                   if attempt.returncode < 0
                   else f"exited with status {attempt.returncode} without reporting an outcome")
            message = f"the trainer process {how}"

        def record(session: Session) -> None:
            jobs.add_event(session, self.job_id, "attempt_failed", message,
                           {"attempt": self.number, "code": code, "log_tail": tail})
            lifecycle.retry_or_fail(session, self.job_id, code=code, message=message,
                                    expected=("running", "cancelling"), enqueue=self.enqueue)

        self._end(attempt, kind, record, error_code=code)

    def _succeed(self, metrics: dict[str, Any], attempt: Attempt) -> None:
        manifest = artifacts.publish_model(self.storage, self.job_id,
                                           self.storage.job_work_dir(self.job_id) / "model")

        def publish(session: Session) -> None:
            session.execute(delete(Artifact).where(Artifact.job_id == self.job_id))
            session.add_all(_fresh(manifest))
            job = session.get(Job, self.job_id)
            if job is not None:
                job.metrics = {**job.metrics, "final": metrics}
            if jobs.transition(session, self.job_id, expected=("running", "cancelling"),
                               to="succeeded", lease_owner=None):
                jobs.add_event(session, self.job_id, "succeeded", "Job succeeded",
                               {"metrics": metrics})

        self._end(attempt, "succeeded", publish)

    def _still_ours(self, session: Session) -> bool:
        """Whether this attempt still holds the job: the reaper may have taken it back."""
        job = session.get(Job, self.job_id)
        return job is not None and job.lease_owner == self.owner and job.attempt == self.number

    def _cancel(self, session: Session) -> None:
        if jobs.transition(session, self.job_id, expected=("running", "cancelling"),
                           to="cancelled", lease_owner=None):
            jobs.add_event(session, self.job_id, "cancelled", "Job cancelled")

    def _fail(self, code: str, message: str) -> None:
        with transaction(self.session_factory) as session:
            if self.number and self._still_ours(session):
                lifecycle.end_attempt(session, self.job_id, self.number, "failed",
                                      error_code=code)
            self._fail_in(session, code, message)

    def _fail_in(self, session: Session, code: str, message: str,
                 hint: str | None = None) -> None:
        if not self._still_ours(session):
            return
        hint = hint or hint_for(code)
        if jobs.transition(session, self.job_id, expected=("running", "cancelling"),
                           to="failed", error_code=code, error_message=message,
                           error_hint=hint, lease_owner=None):
            jobs.add_event(session, self.job_id, "failed", message, {"code": code, "hint": hint})

    def _end(self, attempt: Attempt, outcome: str, then: Callable[[Session], None], *,
             error_code: str | None = None) -> None:
        """Close the attempt and move the job on in one transaction, retried while the
        database is unreachable: a finished attempt is never forgotten."""
        deadline = time.monotonic() + self.settings.lease_seconds * 10
        while True:
            try:
                with transaction(self.session_factory) as session:
                    if not self._still_ours(session):  # the reaper closed this attempt
                        return
                    lifecycle.end_attempt(session, self.job_id, self.number, outcome,
                                          error_code=error_code,
                                          runtime_seconds=attempt.runtime_seconds)
                    then(session)
                return
            except OperationalError:  # unreachable, restarting, locked: worth waiting for
                if time.monotonic() > deadline:
                    raise
                logger.warning("job %s: database unreachable; retrying the final update",
                               self.job_id)
                time.sleep(2)


def _fresh(manifest: list[Artifact]) -> list[Artifact]:
    """New rows for each try: a rolled-back session's objects cannot be added again."""
    return [Artifact(job_id=a.job_id, path=a.path, size_bytes=a.size_bytes, sha256=a.sha256)
            for a in manifest]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # real-time signals have no name
        return f"signal {number}"


def _signal_group(child: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    logger.info("sending %s to trainer process group %s", signum.name, child.pid)
    try:
        os.killpg(child.pid, signum)
    except ProcessLookupError:
        pass


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
