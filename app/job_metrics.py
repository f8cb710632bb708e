"""The jobs' figures in /metrics, read from the database by the process that answers a scrape.

A few queries per scrape, so every API process gives the same figures and none keeps any
state. Queue waits and durations are quantiles over the jobs of the last hour (`WINDOW`),
not cumulative histograms: a histogram's buckets would have to count every job ever run, by
task, and the task is read from each job's JSON spec, so every scrape would parse the whole
job table (seconds at 100,000 jobs). The window's jobs are few, and are all that is parsed.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from datetime import timedelta

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.jobs.lifecycle import LEASED, TERMINAL
from app.models import (
    DeliveryStatus,
    Job,
    JobAttempt,
    JobEvent,
    JobStatus,
    Project,
    WebhookDelivery,
    Worker,
    utcnow,
)
from app.workers.service import live_since

logger = logging.getLogger("finetune.metrics")

WINDOW = timedelta(hours=1)
QUANTILES = (0.5, 0.9, 0.99)

# A running job's figures from its latest training log (worker/training/telemetry.py), which
# the worker keeps in the job's metrics under "train": name there, metric, help.
_TRAINING_FIGURES = (
    ("samples_per_second", "finetune_job_samples_per_second",
     "Training samples per second of a running job, over the steps of its latest log"),
    ("tokens_per_second", "finetune_job_tokens_per_second",
     "Training tokens (non-padding) per second of a running job, over its latest log"),
    ("peak_memory_bytes", "finetune_job_peak_memory_bytes",
     ("Peak memory of a running job's trainer: the GPU allocator's peak on device=cuda, the "
      "process's peak resident set on device=cpu")),
)
_RUNNING_LABELS = ("job_id", "project", "task", "device")


def _task() -> ColumnElement[str]:
    return Job.spec["task"].as_string()


class JobCollector:
    """A prometheus_client collector over one scrape's session."""

    def __init__(self, session: Session, heartbeat_seconds: float) -> None:
        self.session = session
        self.heartbeat_seconds = heartbeat_seconds

    def collect(self) -> Iterator[Metric]:
        try:
            families = [self._jobs(), self._attempts(), *self._recent_jobs(),
                        *self._running_jobs(), self._webhook_deliveries(), *self._workers()]
        except SQLAlchemyError as exc:
            # The request figures are still worth a scrape: they show the outage.
            logger.warning("metrics: the database could not be read: %s", exc)
            self.session.rollback()
            families = []
        yield from families
        yield GaugeMetricFamily("finetune_database_up", "1 when this scrape read the job "
                                "figures from the database, 0 when it could not",
                                value=1 if families else 0)

    def _jobs(self) -> Metric:
        counts = {(project, status): count for project, status, count in self.session.execute(
            select(Project.name, Job.status, func.count())
            .join(Project, Project.id == Job.project_id)
            .group_by(Project.name, Job.status))}
        family = GaugeMetricFamily("finetune_jobs", "Jobs now in each status, by project",
                                   labels=("project", "status"))
        for project in sorted({project for project, _ in counts}):
            for status in JobStatus:
                family.add_metric((project, status.value), counts.get((project, status), 0))
        return family

    def _webhook_deliveries(self) -> Metric:
        counts = dict(self.session.execute(
            select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)).all())
        family = GaugeMetricFamily("finetune_webhook_deliveries",
                                   "Webhook deliveries by status: pending (being tried), "
                                   "succeeded, failed (given up)", labels=("status",))
        for status in DeliveryStatus:
            family.add_metric((status.value,), counts.get(status.value, 0))
        return family

    def _workers(self) -> list[Metric]:
        """The fleet by GPU type: workers by status (offline: no heartbeat for three
        intervals), and the devices the live ones offer."""
        live = Worker.heartbeat_at >= live_since(self.heartbeat_seconds)
        counts = Counter[tuple[str, str]]()
        devices = Counter[str]()
        for gpu_type, status, gpus, is_live in self.session.execute(
                select(Worker.gpu_type, Worker.status, Worker.gpus, live)):
            counts[gpu_type, status if is_live else "offline"] += 1
            devices[gpu_type] += gpus if is_live else 0
        workers = GaugeMetricFamily("finetune_workers", "Registered workers by GPU type and "
                                    "status: idle, busy, offline (no heartbeat for three "
                                    "intervals)", labels=("gpu_type", "status"))
        for gpu_type in sorted(devices):
            for status in ("idle", "busy", "offline"):
                workers.add_metric((gpu_type, status), counts[gpu_type, status])
        offered = GaugeMetricFamily("finetune_worker_devices", "Devices that live workers "
                                    "offer, by GPU type", labels=("gpu_type",))
        for gpu_type in sorted(devices):
            offered.add_metric((gpu_type,), devices[gpu_type])
        return [workers, offered]

    def _attempts(self) -> Metric:
        family = CounterMetricFamily("finetune_job_attempts", "Ended attempts (runs of a "
                                     "job's trainer), by outcome", labels=("outcome",))
        for outcome, count in self.session.execute(
                select(JobAttempt.outcome, func.count()).where(JobAttempt.outcome.is_not(None))
                .group_by(JobAttempt.outcome).order_by(JobAttempt.outcome)):
            family.add_metric((outcome,), count)
        return family

    def _recent_jobs(self) -> list[Metric]:
        """Queue waits of the jobs that first started within the window (a retry keeps
        `started_at`), and durations, first start to end, of those that ended within it."""
        since = utcnow() - WINDOW
        waits: dict[tuple[str, ...], list[float]] = defaultdict(list)
        for task, created, started in self.session.execute(
                select(_task(), Job.created_at, Job.started_at).where(Job.started_at >= since)):
            waits[(task,)].append((started - created).total_seconds())
        ended: Counter[tuple[str, ...]] = Counter()
        durations: dict[tuple[str, ...], list[float]] = defaultdict(list)
        for task, status, started, finished in self.session.execute(
                select(_task(), Job.status, Job.started_at, Job.finished_at)
                .where(Job.finished_at >= since, Job.status.in_(TERMINAL))):
            ended[(task, status.value)] += 1
            if started is not None:  # a job cancelled or timed out in the queue never ran
                durations[(task, status.value)].append((finished - started).total_seconds())
        return [
            _quantiles("finetune_job_queue_wait_seconds", "Time from a job's submission to its "
                       "first start: quantiles over the jobs that first started in the last "
                       "hour, by task", ("task",), waits),
            _counts("finetune_jobs_started_last_hour", "Jobs that first started in the last "
                    "hour, by task", ("task",), {key: len(found) for key, found in waits.items()}),
            _quantiles("finetune_job_duration_seconds", "Time from a job's first start to its "
                       "end (retries included): quantiles over the jobs that ended in the last "
                       "hour, by task and final status", ("task", "status"), durations),
            _counts("finetune_jobs_finished_last_hour", "Jobs that reached a final status in "
                    "the last hour (those that never started included), by task and status",
                    ("task", "status"), ended),
        ]

    def _running_jobs(self) -> list[Metric]:
        """One series per running job (running jobs only: the label set stays small)."""
        jobs = self.session.execute(
            select(Job.id, Project.name, _task(), Job.metrics)
            .join(Project, Project.id == Job.project_id)
            .where(Job.status.in_(LEASED)).order_by(Job.id)).all()
        # The device each one trains on, from its latest `telemetry` event.
        devices: dict[str, str] = {}
        if jobs:
            for job_id, data in self.session.execute(
                    select(JobEvent.job_id, JobEvent.data)
                    .where(JobEvent.kind == "telemetry",
                           JobEvent.job_id.in_([job.id for job in jobs]))
                    .order_by(JobEvent.id)):
                devices[job_id] = str((data or {}).get("device", "unknown"))
        families = []
        for figure, name, documentation in _TRAINING_FIGURES:
            family = GaugeMetricFamily(name, documentation, labels=_RUNNING_LABELS)
            for job_id, project, task, job_metrics in jobs:
                value = (job_metrics or {}).get("train", {}).get(figure)
                if isinstance(value, int | float):
                    family.add_metric((job_id, project, task, devices.get(job_id, "unknown")),
                                      value)
            families.append(family)
        return families


def _quantiles(name: str, documentation: str, labels: tuple[str, ...],
               samples: dict[tuple[str, ...], list[float]]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=(*labels, "quantile"))
    for key in sorted(samples):
        ordered = sorted(samples[key])
        for quantile in QUANTILES:
            # Linear between the two nearest ranks, as numpy's default.
            position = quantile * (len(ordered) - 1)
            below = int(position)
            above = min(below + 1, len(ordered) - 1)
            value = ordered[below] + (ordered[above] - ordered[below]) * (position - below)
            family.add_metric((*key, str(quantile)), value)
    return family


def _counts(name: str, documentation: str, labels: tuple[str, ...],
            counts: Mapping[tuple[str, ...], int]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for key in sorted(counts):
        family.add_metric(key, counts[key])
    return family
