"""The worker's dry-run process: answers POST /v1/jobs/validate while the worker trains.

    python -m worker.dry_runs      # started and restarted by the worker (DryRunProcess)

The Celery pool of a worker is one process that is busy for hours while a job trains, so
dry runs never go through the broker: this process claims them from the database
(app/dry_runs/service.py) and computes them with worker/training/dry_run.py. It imports torch,
transformers and datasets once, at its start, so that an answer takes seconds.

It is a process of its own, not a thread of the worker: the worker forks its trainer
children, and a fork while a thread holds a lock of torch, the tokenizers' thread pool or
malloc can hang the child; a dry run that runs out of memory also takes down this process
only, and the worker starts a new one.
"""

from __future__ import annotations

import logging
import os
import signal
import socket

# Fixed argv, no shell: this module.
import subprocess  # nosec B404
import sys
import threading
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import transaction
from app.dry_runs import service as dry_runs
from app.jobs.spec import SPEC_VERSION, JobSpec
from app.processes import die_with_parent
from app.storage import make_storage
from worker.standby import trainer_env

logger = logging.getLogger("finetune.worker")
# How often an idle server looks for a new dry run: the API waits for this, too.
IDLE_POLL_SECONDS = 0.2


class DryRunServer:
    """Claims dry runs one at a time and stores their reports, until `stopped` is set."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session],
                 owner: str) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.storage = make_storage(settings)
        self.owner = owner

    def serve(self, stopped: threading.Event) -> None:
        warm_up()
        while not stopped.is_set():
            try:
                served = self.serve_one()
            except Exception:  # the server must outlive any one bad round (a lost database)
                logger.warning("a dry-run round failed; trying again", exc_info=True)
                served = False
            if not served:
                stopped.wait(IDLE_POLL_SECONDS)

    def serve_one(self) -> bool:
        """Claim and answer one dry run; False when none was waiting."""
        with transaction(self.session_factory) as session:
            claimed = dry_runs.claim_next(session, self.owner,
                                          self.settings.dry_run_claim_seconds)
            if claimed is None:
                return False
            # Read as a job reads its spec, so that the dry run's answer is the job's: the
            # API checked it strictly when it was submitted, moments ago, at this version.
            dry_run_id = claimed.id
            spec = JobSpec.from_stored(claimed.spec, SPEC_VERSION)
        report = self.report(spec)
        with transaction(self.session_factory) as session:
            if not dry_runs.finish(session, dry_run_id, self.owner, report):
                logger.info("dry run %s was taken over by another worker", dry_run_id)
        return True

    def report(self, spec: JobSpec) -> dict[str, Any]:
        """The dry run's report; a failure of any kind is an error in it, never no answer."""
        from worker.catalog import resolve_model
        from worker.runner import data_files
        from worker.training.dry_run import dry_run, failed
        from worker.training.errors import TrainingError

        try:
            with self.session_factory() as session:
                files = data_files(session, spec, self.storage)
                columns = dry_runs.dataset_columns(session, spec)
            report = dry_run(spec, files, resolve_model(spec.model, self.settings.models_dir))
        except Exception as exc:  # a bug or a library's surprise: the client still gets words
            if not isinstance(exc, TrainingError):
                logger.exception("a dry run failed")
                exc = TrainingError(f"the dry run failed: {type(exc).__name__}: {exc}")
            return failed(spec, exc)
        if "dataset" in report:
            report["dataset"]["columns"]["found"] = columns
        return report


def warm_up() -> None:
    """The imports and the device measurement, paid once before the first request."""
    import datasets
    from transformers.utils import logging as transformers_logging

    from worker.training.dry_run import device_capacity

    # Progress bars would fill the worker's log with every dry run's maps and filters.
    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    device_capacity()


class DryRunProcess:
    """The worker's one dry-run process; `start` starts it again when it has died."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        if self.process is not None:
            logger.warning("the dry-run process exited with %s; starting a new one",
                           self.process.returncode)
        # Argv is sys.executable and a module; its log lines go to the worker's log.
        self.process = subprocess.Popen(  # nosec B603
            [sys.executable, "-m", "worker.dry_runs"], stdin=subprocess.DEVNULL,
            env=trainer_env(),
            start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM))

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> int:
    from app.config import get_settings
    from app.db import make_engine, make_session_factory

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = get_settings()
    engine = make_engine(settings.database_url)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    owner = f"{socket.gethostname()}:{os.getpid()}:dry-runs"
    try:
        DryRunServer(settings, make_session_factory(engine), owner).serve(stopped)
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
