"""jobs.run, the reaper and the dry-run process: what a worker runs besides Celery itself."""

from __future__ import annotations

import logging
import threading

from celery.signals import worker_ready, worker_shutdown
from celery.worker import state as worker_state
from sqlalchemy.orm import Session, sessionmaker

from app.broker import RUN_JOB, Broker
from app.config import Settings
from app.db import transaction
from app.jobs import reaper
from app.storage import make_storage
from worker.dry_runs import DryRunProcess
from worker.registry import Offer, Registration
from worker.standby import StandbyTrainer
from worker.supervisor import JobSupervisor

logger = logging.getLogger("finetune.worker")


def register_tasks(broker: Broker, settings: Settings,
                   session_factory: sessionmaker[Session], offer: Offer) -> None:
    storage = make_storage(settings)
    standby = StandbyTrainer()
    dry_run_process = DryRunProcess()
    stopped = threading.Event()
    registration = Registration(settings, session_factory, offer)

    @broker.celery.task(name=RUN_JOB)
    def run_job(job_id: str) -> None:
        registration.busy(job_id)
        try:
            JobSupervisor(settings, session_factory, storage, job_id, standby, broker.enqueue,
                          worker_stopping).run()
        finally:
            registration.idle()
            if not worker_stopping():
                standby.start()

    def reap_forever() -> None:
        # Every worker reaps: the conditional updates make concurrent reapers harmless.
        while not stopped.wait(settings.reaper_interval_seconds):
            dry_run_process.start()  # again, if it died (a dry run out of memory)
            try:
                with transaction(session_factory) as session:
                    reaper.reap(session, resend_after_seconds=settings.resend_after_seconds,
                                heartbeat_seconds=settings.worker_heartbeat_seconds,
                                enqueue=broker.enqueue)
            except Exception:  # the reaper must outlive any one bad round
                logger.warning("the reaper's round failed; it will try again", exc_info=True)

    def on_ready(**_: object) -> None:
        registration.start()
        standby.start()
        dry_run_process.start()
        threading.Thread(target=reap_forever, name="reaper", daemon=True).start()

    def on_shutdown(**_: object) -> None:
        stopped.set()
        registration.stop()
        standby.stop()
        dry_run_process.stop()

    worker_ready.connect(on_ready, weak=False)
    worker_shutdown.connect(on_shutdown, weak=False)


def worker_stopping() -> bool:
    # Celery stores the exit code there, and a clean one is 0: test against None and False.
    return any(flag is not None and flag is not False
               for flag in (worker_state.should_stop, worker_state.should_terminate))
