"""One attempt of a job: claim it, run the trainer child, hold the lease, finalize.

The supervisor is not a trainer: training runs in a child process in its own process group,
so a crash, an OOM kill or a cancel never takes the worker down, and all of the child's
memory is released when it ends.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket

# Fixed argv, no shell: the trainer module.
import subprocess  # nosec B404
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import delete
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.artifacts import service as artifacts
from app.config import Settings
from app.db import transaction
from app.error_codes import is_retryable
from app.jobs import lifecycle
from app.jobs.spec import SPEC_VERSION, JobSpec
from app.models import Artifact, Job, JobStatus
from app.processes import die_with_parent
from app.storage import LocalStorage, StorageUnavailable
from app.storage.local import StorageFull
from worker.memory_cap import gib, tree_memory_bytes
from worker.runner import OUTCOME_FILE
from worker.standby import StandbyTrainer, trainer_env

logger = logging.getLogger("finetune.worker")

POLL_SECONDS = 0.5
# The trainer itself stops on a cancel at its next progress write; the supervisor's own look
# at the status only starts the grace period, so it need not cost a query every poll.
STATUS_EVERY_SECONDS = 2.0
KILL_AFTER_TERM_SECONDS = 30.0
LOG_TAIL_LINES = 40
T = TypeVar("T")


@dataclass
class TrainerRun:
    """What happened to one run of the trainer child, as the supervisor saw it."""

    returncode: int = 0
    outcome: dict[str, Any] | None = None
    cancelled: bool = False
    interrupted: bool = False
    timed_out: bool = False
    lease_lost: bool = False
    oom_killed: bool = False
    # The memory the trainer held when the worker killed it for going over its cap.
    over_memory_cap: int | None = None
    runtime_seconds: float = 0.0


class JobSupervisor:
    def __init__(self, settings: Settings, session_factory: sessionmaker[Session],
                 storage: LocalStorage, job_id: str, standby: StandbyTrainer,
                 enqueue: lifecycle.Enqueue, is_stopping: Callable[[], bool]) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.storage = storage
        self.job_id = job_id
        self.standby = standby
        self.enqueue = enqueue
        self.is_stopping = is_stopping
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.status_checked_at = 0.0

    def run(self) -> None:
        job = self._job()
        if job is not None and job.spec_version > SPEC_VERSION:
            # Left queued: an up-to-date worker's reaper sends it again.
            logger.warning("job %s: its spec (version %s) is newer than this worker reads; "
                           "left for an up-to-date worker", self.job_id, job.spec_version)
            return
        with transaction(self.session_factory) as session:
            # The attempt names the worker as the registry does (host:pid), not just its host.
            lease = lifecycle.claim(session, self.job_id, self.owner, self.owner,
                                    self.settings.lease_seconds)
        if lease is None:
            logger.info("job %s is not queued any more; message dropped", self.job_id)
            return
        try:
            self._finalize(lease, self._run_child(lease))
        except Exception as exc:  # the worker must survive and take the next job
            logger.exception("supervising job %s failed", self.job_id)
            with transaction(self.session_factory) as session:
                lifecycle.fail(session, lease, "internal_error",
                               f"the worker failed while running the job: {exc}")

    def _run_child(self, lease: lifecycle.Lease) -> TrainerRun:
        work_dir = self.storage.job_work_dir(self.job_id)
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / OUTCOME_FILE).unlink(missing_ok=True)
        oom_kills_before = _oom_kill_count()
        started = time.monotonic()
        ranks = self._ranks()
        # The standby trainer is one process: a job on several devices starts torchrun.
        child = ((self.standby.take(self.job_id, lease.attempt) if ranks == 1 else None)
                 or self._spawn(lease.attempt, ranks))
        run = self._watch(child, lease)
        run.returncode = child.returncode
        run.runtime_seconds = time.monotonic() - started
        outcome_path = work_dir / OUTCOME_FILE
        run.outcome = json.loads(outcome_path.read_text()) if outcome_path.is_file() else None
        run.oom_killed = (child.returncode == -signal.SIGKILL
                          and _oom_kill_count() > oom_kills_before)
        return run

    def _ranks(self) -> int:
        job = self._job()
        try:
            return JobSpec.from_stored(job.spec, job.spec_version).compute.gpus if job else 1
        except ValueError:  # the trainer reports a spec it cannot read
            return 1

    def _spawn(self, attempt: int, ranks: int) -> subprocess.Popen[bytes]:
        runner = ["-m", "worker.runner", "--job-id", self.job_id, "--attempt", str(attempt)]
        # torchrun forwards a stop's SIGTERM to every rank and reports the first to fail.
        launcher = (["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
                    if ranks > 1 else [])
        with self.storage.job_log_path(self.job_id).open("ab") as log:
            # Argv is sys.executable, modules, a job id and numbers.
            return subprocess.Popen(  # nosec B603
                [sys.executable, *launcher, *runner],
                stdout=log, stderr=subprocess.STDOUT, env=trainer_env(), start_new_session=True,
                # A trainer whose worker is gone must not train beside the next attempt.
                preexec_fn=die_with_parent(signal.SIGKILL))

    def _watch(self, child: subprocess.Popen[bytes], lease: lifecycle.Lease) -> TrainerRun:
        """Wait for the child, renewing the lease; stop it on cancel, shutdown or timeout.

        A stop is SIGTERM to the child's group (the trainer saves a checkpoint and exits),
        then SIGKILL if it has not exited in time. A lost lease kills it at once: another
        worker owns the job now; so does memory over FT_TRAINER_MEMORY_BYTES.
        """
        run = TrainerRun()
        budget = self._runtime_budget()
        started = last_renewal = time.monotonic()
        stop_at: float | None = None
        term_sent_at: float | None = None
        while child.poll() is None:
            time.sleep(POLL_SECONDS)
            now = time.monotonic()
            self._cap_memory(child, run)
            if now - last_renewal >= self.settings.lease_seconds / 4:
                renewed = self._renew(lease)
                if renewed is False:
                    run.lease_lost = True
                    _signal_group(child, signal.SIGKILL)
                    child.wait()
                    break
                last_renewal = now if renewed else last_renewal
            if stop_at is None:
                stop_at = self._stop_time(run, now, started, budget)
            if stop_at is not None and now >= stop_at and term_sent_at is None:
                _signal_group(child, signal.SIGTERM)
                term_sent_at = now
            elif term_sent_at is not None and now - term_sent_at > KILL_AFTER_TERM_SECONDS:
                _signal_group(child, signal.SIGKILL)
        return run

    def _cap_memory(self, child: subprocess.Popen[bytes], run: TrainerRun) -> None:
        cap = self.settings.trainer_memory_bytes
        if cap is None or run.over_memory_cap is not None:
            return
        used = tree_memory_bytes(child.pid)
        if used > cap:
            logger.warning("job %s: the trainer holds %s, over the cap of %s; killing it",
                           self.job_id, gib(used), gib(cap))
            run.over_memory_cap = used
            _signal_group(child, signal.SIGKILL)

    def _stop_time(self, run: TrainerRun, now: float, started: float,
                   budget: float) -> float | None:
        """When to signal the child, once a reason to stop it has appeared."""
        if self.is_stopping():
            run.interrupted = True
            return now
        if now - started >= budget:
            run.timed_out = True
            return now
        if now - self.status_checked_at >= STATUS_EVERY_SECONDS:
            self.status_checked_at = now
            if self._status() == JobStatus.CANCELLING:
                run.cancelled = True
                return now + self.settings.cancel_grace_seconds
        return None

    def _runtime_budget(self) -> float:
        job = self._job()
        return (lifecycle.runtime_left(job, self.settings.max_job_seconds) if job
                else float(self.settings.max_job_seconds))

    def _renew(self, lease: lifecycle.Lease) -> bool | None:
        """True when renewed, False when the job is no longer ours, None when unknown."""
        try:
            with transaction(self.session_factory) as session:
                return lifecycle.renew(session, lease, self.settings.lease_seconds)
        except SQLAlchemyError:
            logger.warning("job %s: could not renew the lease (database unreachable)",
                           self.job_id)
            return None

    def _status(self) -> JobStatus | None:
        job = self._job()
        return job.status if job else None

    def _job(self) -> Job | None:
        try:
            with self.session_factory() as session:
                return session.get(Job, self.job_id)
        except SQLAlchemyError:
            return None

    def _finalize(self, lease: lifecycle.Lease, run: TrainerRun) -> None:
        if run.lease_lost:
            logger.warning("job %s: lease lost; another worker owns it now", self.job_id)
            return
        outcome = run.outcome or {}
        status = outcome.get("status")
        # The trainer may have stopped on a cancel or a SIGTERM before the supervisor saw why.
        run.cancelled |= status == "cancelled" or self._status() == JobStatus.CANCELLING
        run.interrupted |= status == "interrupted" and not run.timed_out
        runtime = run.runtime_seconds
        if run.returncode == 0 and status == "succeeded":
            self._succeed(lease, outcome.get("metrics", {}), runtime)
        elif run.cancelled:
            self._end(lambda session: lifecycle.stop_cancelled(session, lease, runtime))
        elif run.timed_out:
            self._end(lambda session: lifecycle.time_out(session, lease, runtime))
        elif run.interrupted:
            # A cancel requested meanwhile wins: the job is not queued again.
            self._end(lambda session: lifecycle.interrupt(session, lease, runtime, self.enqueue)
                      or lifecycle.stop_cancelled(session, lease, runtime))
        elif status == "failed" and not is_retryable(outcome["code"]):
            self._end(lambda session: lifecycle.fail(
                session, lease, outcome["code"], outcome["message"], outcome.get("hint"),
                runtime))
        else:
            self._retry(lease, run, outcome)

    def _retry(self, lease: lifecycle.Lease, run: TrainerRun, outcome: dict[str, Any]) -> None:
        tail = _log_tail(self.storage.job_log_path(self.job_id))
        if outcome.get("status") == "failed":  # a retryable failure the trainer reported
            kind, code, message = outcome["code"], outcome["code"], outcome["message"]
        elif run.over_memory_cap is not None:
            kind, code = "out_of_memory", "out_of_memory"
            message = (f"the trainer process used {gib(run.over_memory_cap)} of memory, over "
                       f"this worker's cap of {gib(self.settings.trainer_memory_bytes or 0)} "
                       "(FT_TRAINER_MEMORY_BYTES), and was killed")
        elif run.oom_killed:
            kind, code = "out_of_memory", "out_of_memory"
            message = "the trainer process was killed by the kernel's out-of-memory killer"
        else:
            code = "worker_crashed"
            kind = "killed" if run.returncode == -signal.SIGKILL else "crashed"
            how = (f"was killed by {_signal_name(-run.returncode)}" if run.returncode < 0
                   else f"exited with status {run.returncode} without reporting an outcome")
            message = f"the trainer process {how}"
        self._end(lambda session: lifecycle.retry(
            session, lease, outcome=kind, code=code, message=message,
            runtime_seconds=run.runtime_seconds, log_tail=tail, enqueue=self.enqueue))

    def _succeed(self, lease: lifecycle.Lease, metrics: dict[str, Any], runtime: float) -> None:
        try:
            manifest = self._renewing(lease, lambda: artifacts.publish_model(
                self.storage, self.job_id, self.storage.job_work_dir(self.job_id) / "model"))
        except (StorageUnavailable, StorageFull) as exc:  # not succeeded without its model
            self._retry(lease, TrainerRun(runtime_seconds=runtime), {
                "status": "failed", "code": exc.code,
                "message": f"the model could not be published: {exc.message}"})
            return

        def publish(session: Session) -> bool:
            if not lifecycle.succeed(session, lease, metrics, runtime):
                return False
            session.execute(delete(Artifact).where(Artifact.job_id == self.job_id))
            session.add_all(_fresh(manifest))
            return True

        self._end(publish)

    def _renewing(self, lease: lifecycle.Lease, work: Callable[[], T]) -> T:
        """Do `work` while holding the lease: putting a multi-GB model in an object store
        can outlast it, and the reaper would hand a job in publication to another worker."""
        with ThreadPoolExecutor(1, thread_name_prefix="publish") as pool:
            done = pool.submit(work)
            while True:
                try:
                    return done.result(timeout=self.settings.lease_seconds / 4)
                except TimeoutError:
                    self._renew(lease)

    def _end(self, move: Callable[[Session], bool]) -> None:
        """End the attempt in one transaction, retried while the database is unreachable: a
        finished attempt is never forgotten. The move does nothing if the reaper has taken
        the job back in the meantime."""
        deadline = time.monotonic() + self.settings.lease_seconds * 10
        while True:
            try:
                with transaction(self.session_factory) as session:
                    if not move(session):
                        logger.info("job %s: this attempt no longer holds the job; its "
                                    "ending is not recorded", self.job_id)
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
    """SIGKILL, or "signal 35" for a signal Python has no name for (most real-time ones)."""
    try:
        return signal.Signals(number).name
    except ValueError:
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
