"""Start a Celery worker for jobs: one job at a time, consuming the queues of the job classes
its devices can run."""

from __future__ import annotations

import logging

from app import migrate
from app.broker import Broker, declare_queues
from app.config import Settings
from app.db import make_engine, make_session_factory
from worker.celery_tasks import register_tasks
from worker.registry import detect_offer

logger = logging.getLogger("finetune.worker")


def run_worker(settings: Settings) -> None:
    settings.prepare_local_dirs()
    engine = make_engine(settings.database_url)
    migrate.migrate_or_refuse(engine, settings.database_url, settings.migrate_on_start)
    broker = Broker(settings)
    offer = detect_offer(settings)
    logger.info("this worker offers %d %s device(s): it consumes %s", offer.gpus,
                   offer.gpu_type, ", ".join(offer.queues))
    declare_queues(broker.celery, settings, offer.queues)
    register_tasks(broker, settings, make_session_factory(engine), offer)
    # solo pool: the task only supervises; the training runs in its own child process.
    broker.celery.worker_main(["worker", "--pool", "solo", "--concurrency", "1",
                               "--queues", ",".join(offer.queues), "--loglevel", "INFO",
                               "--without-gossip", "--without-mingle"])
