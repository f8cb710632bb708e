"""The broker as the API sees it: send "run job X", and tell whether it is reachable."""

from __future__ import annotations

from app.config import Settings
from app.errors import ServiceUnavailable
from worker.celery_app import RUN_JOB, create_celery, declare_queue


class Broker:
    def __init__(self, settings: Settings) -> None:
        self.celery = create_celery(settings)
        declare_queue(self.celery, settings)

    def enqueue(self, job_id: str) -> None:
        try:
            self.celery.send_task(RUN_JOB, args=[job_id])
        except Exception as exc:  # kombu raises many connection error types
            raise ServiceUnavailable(
                f"job {job_id} was saved but could not be sent to the workers: the broker "
                f"is unreachable ({type(exc).__name__}); try again shortly",
                code="broker_unavailable") from None

    def is_reachable(self) -> bool:
        try:
            with self.celery.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
            return True
        except Exception:
            return False
