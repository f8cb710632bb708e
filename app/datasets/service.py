"""Datasets: register an uploaded file after inspecting it, list, preview, delete."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import idempotency
from app.auth import Caller
from app.datasets.fits import task_fits
from app.datasets.formats import read_preview
from app.datasets.inspection import DatasetFormatError
from app.datasets.intake import take_in
from app.db import after_commit
from app.errors import Conflict, InvalidRequest, NotFound
from app.jobs.lifecycle import ACTIVE
from app.models import Dataset, Job, JobDataset, new_id
from app.pagination import paginate
from app.storage import LocalStorage, StorageUnavailable
from app.storage.local import is_disk_full, storage_full

logger = logging.getLogger("finetune.api")
# The request field an intake problem is about, where it is not the file.
_REQUEST_FIELDS = {"unsupported_format": "format", "unsupported_layout": "layout"}


def create(session: Session, caller: Caller, storage: LocalStorage, *, upload_path: Path,
           filename: str | None,
           size_bytes: int, sha256: str, name: str | None, declared_format: str | None,
           declared_layout: str | None, max_bytes: int,
           idempotency_key: str | None = None) -> Dataset:
    """Inspect the uploaded file and publish it; the file is removed when it is refused."""
    name = _checked_text(name, "name", 200)
    filename = (filename or "").replace("\x00", "")[-255:] or None
    digest = idempotency.request_digest(sha256, filename or "", name or "", declared_format or "",
                                        declared_layout or "")
    try:
        original = idempotency.replayed(session, caller.project_id, "datasets",
                                        idempotency_key, digest)
    except InvalidRequest:
        upload_path.unlink(missing_ok=True)
        raise
    if original is not None:
        upload_path.unlink(missing_ok=True)
        return get(session, caller, original)
    try:
        intake = take_in(upload_path, filename, declared_format, declared_layout,
                         max_bytes=max_bytes)
    except DatasetFormatError as exc:
        upload_path.unlink(missing_ok=True)
        raise InvalidRequest(exc.message, code=exc.code,
                             param=_REQUEST_FIELDS.get(exc.code, "file")) from None
    except OSError as exc:  # take_in has removed its conversion
        upload_path.unlink(missing_ok=True)
        if is_disk_full(exc, upload_path.parent):
            raise storage_full(upload_path.parent, "converting the upload") from None
        raise
    try:
        dataset = Dataset(
            id=new_id("ds"), project_id=caller.project_id,
            name=name or filename or "dataset", format=intake.format,
            source_format=intake.source_format, layout=intake.layout,
            layout_details=intake.details, filename=filename, size_bytes=size_bytes,
            sha256=sha256, num_rows=intake.inspection.num_rows,
            columns=[{"name": c.name, "type": c.type} for c in intake.inspection.columns],
        )
        session.add(dataset)
        session.flush()
        idempotency.remember(session, caller.project_id, "datasets", idempotency_key, digest,
                             dataset.id)
        storage.publish_dataset(intake.path, dataset.id, intake.format)
    finally:  # a conversion not published by now never will be
        if intake.path != upload_path:
            intake.path.unlink(missing_ok=True)
    return dataset


def fits(dataset: Dataset) -> dict[str, dict[str, Any]]:
    """The tasks `dataset` fits, with the dataset fields a job on it would use."""
    return task_fits(dataset.layout, column_types(dataset), dataset.layout_details)


def column_types(dataset: Dataset) -> dict[str, str]:
    return {column["name"]: column["type"] for column in dataset.columns}


def get(session: Session, caller: Caller, dataset_id: str) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or not caller.sees(dataset.project_id):
        raise NotFound(f"no dataset with id {dataset_id}", param="dataset_id")
    return dataset


def list_page(session: Session, caller: Caller, limit: int,
              after: str | None) -> tuple[list[Dataset], bool]:
    return paginate(session, caller, select(Dataset), Dataset, limit, after)


def preview(session: Session, caller: Caller, storage: LocalStorage, dataset_id: str,
            limit: int) -> tuple[Dataset, list[dict[str, Any]]]:
    dataset = get(session, caller, dataset_id)
    rows = read_preview(storage.dataset_file(dataset.id, dataset.format), dataset.format, limit)
    return dataset, rows


def delete(session: Session, caller: Caller, storage: LocalStorage, dataset_id: str) -> None:
    dataset = get(session, caller, dataset_id)
    users = session.scalars(
        select(Job.id).join(JobDataset, JobDataset.job_id == Job.id)
        .where(JobDataset.dataset_id == dataset_id, Job.status.in_(ACTIVE))
    ).all()
    if users:
        raise Conflict(f"dataset {dataset_id} is used by active jobs: {', '.join(users)}; "
                       "cancel them or wait for them to finish", code="dataset_in_use")
    # Finished jobs keep their record of which data they read, but not the file itself.
    session.execute(JobDataset.__table__.delete().where(JobDataset.dataset_id == dataset_id))
    session.delete(dataset)
    session.flush()
    after_commit(session, lambda: _delete_file(storage, dataset_id))


def _delete_file(storage: LocalStorage, dataset_id: str) -> None:
    # The dataset is gone already: an object left behind by an unreachable store is only
    # space, never served again, so the delete still succeeds.
    try:
        storage.delete_dataset(dataset_id)
    except StorageUnavailable as exc:
        logger.warning("dataset %s deleted, but not its stored file: %s", dataset_id,
                       exc.message)


def _checked_text(value: str | None, field: str, limit: int) -> str | None:
    if value is not None and (len(value) > limit or "\x00" in value):
        raise InvalidRequest(f"{field} must be at most {limit} characters, without NUL",
                             param=field)
    return value
