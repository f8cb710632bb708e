"""Start a Celery worker for jobs: one job at a time, one worker per GPU."""

from __future__ import annotations

from app import migrate
from app.broker import QUEUE, Broker
from app.config import Settings
from app.db import make_engine, make_session_factory
from worker.celery_tasks import register_tasks


def run_worker(settings: Settings) -> None:
    settings.prepare_local_dirs()
    engine = make_engine(settings.database_url)
    migrate.migrate_or_refuse(engine, settings.database_url, settings.migrate_on_start)
    broker = Broker(settings)
    register_tasks(broker, settings, make_session_factory(engine))
    # solo pool: the task only supervises; the training runs in its own child process.
    broker.celery.worker_main(["worker", "--pool", "solo", "--concurrency", "1", "--queues", QUEUE,
                               "--loglevel", "INFO", "--without-gossip", "--without-mingle"])
