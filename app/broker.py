"""The broker contract shared by the API and the worker: task name, queues, Celery settings.

Imports nothing heavy: the API process uses it to send jobs, the worker to receive them.

A job goes to the queue of its class, `jobs.<gpu_type>.<gpus>` (`any` for a job that names no
device type); a worker consumes only the queues of the classes it can run. Which worker may
run which job is decided here and nowhere else: by the queue names.
"""

from __future__ import annotations

import time

from celery import Celery

from app.config import Settings
from app.errors import ServiceUnavailable

RUN_JOB = "jobs.run"
ANY_TYPE = "any"


def job_queue(gpus: int, gpu_type: str | None) -> str:
    """The queue of a job asking for `gpus` devices of `gpu_type` (None: any type)."""
    return f"jobs.{gpu_type or ANY_TYPE}.{gpus}"


def worker_queues(gpu_type: str, gpus: int) -> list[str]:
    """The queues a worker offering `gpus` devices of `gpu_type` consumes: every job of its
    type, or of no named type, that asks for at most `gpus` devices."""
    return [job_queue(count, named) for count in range(1, gpus + 1)
            for named in (gpu_type, None)]


def create_celery(settings: Settings) -> Celery:
    celery = Celery("finetune", broker=settings.broker_url, set_as_current=False)
    # A message must outlive the longest job: Redis redelivers unacked messages after the
    # visibility timeout, which would start the job a second time.
    visibility_timeout = settings.max_job_seconds + 3600
    if settings.broker_url.startswith("sqla+"):
        # Kombu hands these to create_engine(); SQLite writers wait instead of failing.
        transport_options: dict[str, object] = {"connect_args": {"timeout": 30}}
    else:
        transport_options = {"visibility_timeout": visibility_timeout}
    celery.conf.update(
        task_default_queue=job_queue(1, None),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options,
        visibility_timeout=visibility_timeout,
        # The API answers 503 quickly instead of hanging a request on a dead broker.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0,
                                   "interval_step": 0.5, "interval_max": 1},
    )
    return celery


def declare_queues(celery: Celery, settings: Settings, queues: list[str],
                   attempts: int = 10) -> None:
    """Create job queues in a SQLAlchemy broker before the API and the worker race to.

    Kombu's SQLAlchemy transport creates its queue row on first use and does not survive
    two processes doing that at once; each attempt uses a fresh connection and session.
    The worker declares the queues it consumes, the API each queue before its first send.
    """
    if not settings.broker_url.startswith("sqla+"):
        return
    for attempt in range(attempts):
        try:
            with celery.connection_for_write() as connection:
                for queue in queues:
                    connection.default_channel.queue_declare(queue=queue)
            return
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2)


class Broker:
    """Sends "run job X" and tells whether the broker is reachable; the API and worker share it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.celery = create_celery(settings)
        self.declared: set[str] = set()

    def enqueue(self, job_id: str, queue: str) -> None:
        """Send "run job X" to `queue`, the queue of the job's class (job_queue)."""
        try:
            if queue not in self.declared:
                declare_queues(self.celery, self.settings, [queue])
                self.declared.add(queue)
            self.celery.send_task(RUN_JOB, args=[job_id], queue=queue)
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
