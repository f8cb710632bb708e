"""OpenAI files as the service's own objects: a `fine-tune` file IS an uploaded dataset (same
id, `ds_…`), and a job's result file (`file-result-<job id>`, purpose `fine-tune-results`) is a
CSV of its metric points, generated when it is read.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth import Caller
from app.datasets import service as datasets
from app.errors import NotFound
from app.jobs import lifecycle
from app.jobs import service as jobs
from app.models import Dataset, Job, MetricPoint
from app.openai_compat.errors import UnsupportedByService
from app.openai_compat.schemas import FileObject
from app.pagination import paginate
from app.params import is_id
from app.storage import LocalStorage, StoredFile

FINE_TUNE = "fine-tune"
RESULTS = "fine-tune-results"
RESULT_PREFIX = "file-result-"
RESULT_FILENAME = "step_metrics.csv"
# Training-log series kept under OpenAI's column names; evaluations' eval_<name> become
# valid_<name>, without their timings.
_TRAIN_COLUMNS = {"loss": "train_loss", "learning_rate": "learning_rate",
                  "grad_norm": "grad_norm", "num_input_tokens_seen": "tokens_seen"}
_TIMINGS = ("_runtime", "_per_second")
# Upload form fields: OpenAI's, and the native upload's own (read as POST /v1/datasets reads them).
_FORM_FIELDS = ("purpose", "name", "format", "layout")


def result_file_id(job_id: str) -> str:
    return f"{RESULT_PREFIX}{job_id}"


def _result_job_id(file_id: str) -> str | None:
    return file_id.removeprefix(RESULT_PREFIX) if file_id.startswith(RESULT_PREFIX) else None


def check_upload_fields(fields: dict[str, str]) -> None:
    """Only what a file for fine-tuning can be: purpose `fine-tune`, and no expiry."""
    unknown = [name for name in fields if name not in _FORM_FIELDS]
    if unknown:
        what = ("files do not expire on this service" if unknown[0].startswith("expires_after")
                else f"unknown form field '{unknown[0]}'")
        raise UnsupportedByService(f"{what}; send 'file' and purpose 'fine-tune'",
                                   code="unsupported_parameter", param=unknown[0])
    purpose = fields.get("purpose")
    if purpose != FINE_TUNE:
        raise UnsupportedByService(
            f"purpose {purpose!r} is not served here: this service keeps files for "
            "fine-tuning only; upload with purpose 'fine-tune'" if purpose else
            "the form needs a 'purpose' field: 'fine-tune'",
            code="unsupported_purpose", param="purpose")


def file_object(dataset: Dataset) -> FileObject:
    return FileObject(id=dataset.id, bytes=dataset.size_bytes,
                      created_at=int(dataset.created_at.timestamp()),
                      filename=dataset.filename or dataset.name, purpose=FINE_TUNE)


def _result_object(job: Job, content: bytes) -> FileObject:
    return FileObject(id=result_file_id(job.id), bytes=len(content),
                      created_at=int((job.finished_at or job.created_at).timestamp()),
                      filename=RESULT_FILENAME, purpose=RESULTS)


def retrieve(session: Session, caller: Caller, file_id: str) -> FileObject:
    if is_result_file(file_id):
        job, content = result_file(session, caller, file_id)
        return _result_object(job, content)
    return file_object(_dataset(session, caller, file_id))


def list_page(session: Session, caller: Caller, purpose: str | None, limit: int,
              after: str | None) -> tuple[list[FileObject], bool]:
    """Uploads, newest first; result files (those of finished jobs) with their purpose."""
    if purpose == RESULTS:
        finished, has_more = paginate(
            session, caller, select(Job).where(Job.status.in_(lifecycle.TERMINAL)), Job, limit,
            _result_job_id(after) or after if after else None)
        return [_result_object(job, metrics_csv(session, job.id)) for job in finished], has_more
    if purpose not in (None, FINE_TUNE):
        return [], False
    uploads, has_more = datasets.list_page(session, caller, limit, after)
    return [file_object(dataset) for dataset in uploads], has_more


def stored_file(session: Session, caller: Caller, storage: LocalStorage,
                file_id: str) -> tuple[StoredFile, str]:
    """The stored file of an upload, and its name: as uploaded, or as converted and checked
    (chats and other rewritten layouts as JSON Lines)."""
    dataset = _dataset(session, caller, file_id)
    file = storage.dataset_download(dataset.id, dataset.format)
    if file is None:  # its row outlived the file: a delete's after-commit step is under way
        raise _no_file(file_id)
    return file, file_object(dataset).filename


def result_file(session: Session, caller: Caller, file_id: str) -> tuple[Job, bytes]:
    """A job's result file: its metrics CSV, made now."""
    job_id = _result_job_id(file_id)
    if job_id is None or not is_id(job_id):
        raise _no_file(file_id)
    try:
        job = jobs.get(session, caller, job_id)
    except NotFound:
        raise _no_file(file_id) from None
    return job, metrics_csv(session, job.id)


def delete(session: Session, caller: Caller, storage: LocalStorage, file_id: str) -> None:
    if is_result_file(file_id):
        raise UnsupportedByService("a result file is made from its job's metrics and cannot "
                                   "be deleted", code="unsupported_operation", param="file_id")
    datasets.delete(session, caller, storage, _dataset(session, caller, file_id).id)


def is_result_file(file_id: str) -> bool:
    return _result_job_id(file_id) is not None


def metrics_csv(session: Session, job_id: str) -> bytes:
    """One row per logged step: step, epoch, the training figures, then valid_<metric> for
    every evaluation metric; a figure not logged at a step is empty."""
    rows: dict[int, dict[str, Any]] = {}
    columns = ["step", "epoch", *_TRAIN_COLUMNS.values()]
    for point in session.scalars(select(MetricPoint).where(MetricPoint.job_id == job_id)
                                 .order_by(MetricPoint.step, MetricPoint.id)):
        column = _column(point.name)
        if column is None:
            continue
        if column not in columns:
            columns.append(column)
        row = rows.setdefault(point.step, {"step": point.step})
        row[column] = point.value
        if point.epoch is not None:
            row["epoch"] = round(point.epoch, 4)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows[step] for step in sorted(rows))
    return out.getvalue().encode()


def _column(name: str) -> str | None:
    if name in _TRAIN_COLUMNS:
        return _TRAIN_COLUMNS[name]
    if name.startswith("eval_") and not name.endswith(_TIMINGS):
        return "valid_" + name.removeprefix("eval_")
    return None


def _dataset(session: Session, caller: Caller, file_id: str) -> Dataset:
    if not is_id(file_id):
        raise _no_file(file_id)
    try:
        return datasets.get(session, caller, file_id)
    except NotFound:
        raise _no_file(file_id) from None


def _no_file(file_id: str) -> NotFound:
    return NotFound(f"no file with id {file_id!r}", param="file_id")
