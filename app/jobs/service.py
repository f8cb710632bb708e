"""Jobs as the API serves them: submit, read, list, cancel. Their states move in lifecycle.py."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import idempotency
from app.auth import Caller
from app.config import Settings
from app.errors import Conflict, InvalidRequest, NotFound, TooManyRequests
from app.jobs import lifecycle
from app.jobs.dataset_fields import layout_hint, project_dataset, with_dataset_fields
from app.jobs.spec import SPEC_VERSION, JobSpec
from app.jobs.tasks import columns_read
from app.jobs.tasks.columns import LABEL, LABEL_KINDS, LABEL_LIST, Column, type_problem
from app.memo import Remembered
from app.models import (
    ApiKey,
    Dataset,
    Job,
    JobAttempt,
    JobDataset,
    JobEvent,
    JobStatus,
    MetricPoint,
    Project,
    new_id,
)
from app.pagination import paginate

_KEY_PREFIXES: Remembered[str, str] = Remembered()


def create(session: Session, caller: Caller, spec: JobSpec, enqueue: lifecycle.Enqueue,
           settings: Settings, idempotency_key: str | None = None) -> Job:
    """A new job of the caller's project, on datasets of that project."""
    digest = idempotency.request_digest(spec.model_dump_json())
    original = idempotency.replayed(session, caller.project_id, "jobs", idempotency_key, digest)
    if original is not None:
        return get(session, caller, original)
    spec = with_dataset_fields(session, caller, spec).resolved()
    check_server_caps(spec, settings)
    used = check_datasets(session, caller, spec)
    _check_quota(session, caller.project_id, settings.max_active_jobs_per_project)
    job = lifecycle.submit(session, Job(
        id=new_id("job"), project_id=caller.project_id, api_key_id=caller.key_id,
        name=spec.name, spec=spec.model_dump(mode="json"), spec_version=SPEC_VERSION,
        metrics={}), enqueue, {"model": spec.model, "task": spec.task})
    for role, dataset in used.items():
        session.add(JobDataset(job_id=job.id, role=role, dataset_id=dataset.id))
    idempotency.remember(session, caller.project_id, "jobs", idempotency_key, digest, job.id)
    session.flush()
    return job


def check_server_caps(spec: JobSpec, settings: Settings) -> None:
    """The spec asks for no more than this server allows (422 otherwise)."""
    if spec.max_attempts > settings.max_attempts:
        raise InvalidRequest(f"max_attempts is capped at {settings.max_attempts} on this server",
                             param="max_attempts")
    if spec.max_runtime_seconds and spec.max_runtime_seconds > settings.max_job_seconds:
        raise InvalidRequest(f"max_runtime_seconds is capped at {settings.max_job_seconds} on "
                             "this server (FT_MAX_JOB_SECONDS)", param="max_runtime_seconds")


def _check_quota(session: Session, project_id: str, quota: int) -> None:
    # The project's row lock makes concurrent submits of one project count one at a time;
    # NO KEY UPDATE, so that rows referencing the project (a finishing upload) do not wait.
    session.execute(select(Project.id).where(Project.id == project_id)
                    .with_for_update(key_share=True))
    active = session.scalar(select(func.count()).select_from(Job).where(
        Job.project_id == project_id, Job.status.in_(lifecycle.ACTIVE)))
    if active is not None and active >= quota:
        raise TooManyRequests(
            f"this project already has {active} queued or running jobs, its quota "
            f"(FT_MAX_ACTIVE_JOBS_PER_PROJECT); submit again when one has finished, or cancel "
            "one", code="job_quota_exceeded", headers={"Retry-After": "60"})


def check_datasets(session: Session, caller: Caller, spec: JobSpec) -> dict[str, Dataset]:
    """Every referenced dataset exists and has the columns the spec names, holding the kind
    of values the task reads (422 otherwise)."""
    used: dict[str, Dataset] = {}
    for role, dataset_id in spec.dataset.uploaded_ids().items():
        dataset = project_dataset(session, caller, dataset_id, role)
        types = {column["name"]: column["type"] for column in dataset.columns}
        for column in columns_read(spec):
            if column.name not in types:
                raise InvalidRequest(
                    f"column '{column.name}' is not in the {role} dataset {dataset_id}; "
                    f"its columns are: {', '.join(types)}.{layout_hint(dataset)}",
                    code="column_not_found", param=f"dataset.{column.field}")
            expected = type_problem(column, types[column.name])
            if expected is not None:
                _refuse_column_type(spec, column, types[column.name], expected, dataset)
        used[role] = dataset
    return used


def _refuse_column_type(spec: JobSpec, column: Column, found: str, expected: str,
                        dataset: Dataset) -> None:
    multi_label_choice = column.kind in (LABEL, LABEL_LIST)
    raise InvalidRequest(
        f"{spec.task} needs {expected} in '{column.name}'; dataset {dataset.id} holds "
        f"{found} values there.{layout_hint(dataset)}",
        code="invalid_label_column" if column.kind in LABEL_KINDS else "invalid_column_type",
        param="dataset.multi_label" if multi_label_choice else f"dataset.{column.field}")


def get(session: Session, caller: Caller, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or not caller.sees(job.project_id):
        raise NotFound(f"no job with id {job_id}", param="job_id")
    return job


def key_prefixes(session: Session, jobs: list[Job]) -> dict[str | None, str | None]:
    """The prefix of the key that submitted each job, by key id. A key's prefix never
    changes, so the process remembers the ones it read: a polled job costs no query here."""
    ids = {job.api_key_id for job in jobs if job.api_key_id}
    found: dict[str | None, str | None] = dict.fromkeys(ids, None)
    found[None] = None
    found.update(_KEY_PREFIXES.get_many(ids, lambda unknown: session.execute(
        select(ApiKey.id, ApiKey.prefix).where(ApiKey.id.in_(unknown))).all()))
    return found


def attempts(session: Session, jobs: list[Job]) -> dict[str, list[JobAttempt]]:
    found: dict[str, list[JobAttempt]] = {job.id: [] for job in jobs}
    # A claim writes the attempt's row with the job's attempt number: a job that was never
    # claimed (a polled queued job) has none to look for.
    if not (claimed := [job.id for job in jobs if job.attempt]):
        return found
    for attempt in session.scalars(select(JobAttempt).where(JobAttempt.job_id.in_(claimed))
                                   .order_by(JobAttempt.number)):
        found[attempt.job_id].append(attempt)
    return found


def list_page(session: Session, caller: Caller, status: JobStatus | None, limit: int,
              after: str | None) -> tuple[list[Job], bool]:
    statement = select(Job)
    if status is not None:
        statement = statement.where(Job.status == status)
    return paginate(session, caller, statement, Job, limit, after)


def cancel(session: Session, caller: Caller, job_id: str) -> Job:
    """Queued: cancelled at once. Running: cancelling, until the worker stops it. Idempotent."""
    job = get(session, caller, job_id)
    lifecycle.cancel(session, job_id)
    session.flush()
    session.refresh(job)
    if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        raise Conflict(f"job {job_id} has already finished ({job.status}); nothing to cancel",
                       code="job_already_finished")
    return job


def events(session: Session, caller: Caller, job_id: str, after: int | None,
           limit: int) -> tuple[list[JobEvent], bool]:
    get(session, caller, job_id)
    statement = select(JobEvent).where(JobEvent.job_id == job_id)
    if after is not None:
        statement = statement.where(JobEvent.id > after)
    rows = list(session.scalars(statement.order_by(JobEvent.id).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def metric_series(session: Session, caller: Caller,
                  job_id: str) -> dict[str, list[MetricPoint]]:
    get(session, caller, job_id)
    series: dict[str, list[MetricPoint]] = {}
    points = session.scalars(select(MetricPoint).where(MetricPoint.job_id == job_id)
                             .order_by(MetricPoint.step, MetricPoint.id))
    for point in points:
        series.setdefault(point.name, []).append(point)
    return series
