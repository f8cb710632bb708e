"""Artifacts: the manifest of a published model folder and the files behind it."""

from __future__ import annotations

import os
import re
import shutil
import tarfile
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth import Caller
from app.errors import Conflict, NotFound, RangeNotSatisfiable, ServiceError
from app.hashing import sha256_of
from app.jobs import service as jobs
from app.models import Artifact
from app.storage import LocalStorage, StoredFile
from app.storage.local import StorageFull, disk_space, is_disk_full


def list_for_job(session: Session, caller: Caller, job_id: str) -> list[Artifact]:
    jobs.get(session, caller, job_id)
    return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id)
                                .order_by(Artifact.path)))


def stored_artifact(session: Session, caller: Caller, storage: LocalStorage, job_id: str,
                    relative: str) -> StoredFile:
    """A file of the job's published manifest: nothing else of the store is ever served."""
    jobs.get(session, caller, job_id)
    listed = "\x00" not in relative and session.scalar(  # PostgreSQL text holds no NUL
        select(Artifact.path).where(Artifact.job_id == job_id, Artifact.path == relative))
    file = storage.artifact(job_id, relative) if listed else None
    if file is None:
        raise NotFound(f"job {job_id} has no artifact '{relative}'", param="path")
    return file


def stored_archive(session: Session, caller: Caller, storage: LocalStorage,
                   job_id: str) -> StoredFile:
    job = jobs.get(session, caller, job_id)
    archive = storage.model_archive(job_id) if job.status == "succeeded" else None
    if archive is None:
        raise Conflict(f"job {job_id} has no model yet (status {job.status}); the model can be "
                       "downloaded once the job has succeeded", code="model_not_ready")
    return archive


def publish_model(storage: LocalStorage, job_id: str, trained: Path) -> list[Artifact]:
    """Move a finished model folder into place, archive it, put both in the store; answer
    its manifest.

    Each step writes under a temporary name and renames, so a crash never leaves a
    half-written model or archive where a client can see it; in an object store the archive
    goes up last, and nothing is served before the job is recorded as succeeded. File work
    only, so no database transaction waits on it, and safe to repeat: a retry finds the
    folder already in place. Raises StorageUnavailable when the store stays unreachable, and
    StorageFull, with the model folder and the partial archive deleted, when the disk fills up.
    """
    model_dir = storage.job_model_dir(job_id)
    if trained.is_dir():
        shutil.rmtree(model_dir, ignore_errors=True)
        os.replace(trained, model_dir)
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and not p.is_symlink())
    archive = storage.model_archive_path(job_id)
    partial = archive.with_suffix(".partial")
    try:
        # Weights barely compress (level 1 saves ~7% on a BERT-size model at ~20x the time),
        # so the gzip stream only stores: archiving stays I/O-bound even for multi-GB models.
        with tarfile.open(partial, "w:gz", compresslevel=0) as tar:
            for file in files:
                tar.add(file, arcname=f"model/{file.relative_to(model_dir).as_posix()}",
                        recursive=False)
        os.replace(partial, archive)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        if not is_disk_full(exc, model_dir):
            raise
        # Nothing serves the folder before the job succeeds, and the next attempt saves the
        # model again: it needs the room more.
        shutil.rmtree(model_dir, ignore_errors=True)
        raise StorageFull(f"the disk of {model_dir.parent} filled up while archiving the "
                          "model; the model folder and the partial archive were deleted and "
                          f"{disk_space(model_dir.parent)} now") from None
    manifest = [Artifact(job_id=job_id, path=file.relative_to(model_dir).as_posix(),
                         size_bytes=file.stat().st_size, sha256=sha256_of(file))
                for file in files]
    storage.keep_model(job_id, {artifact.path: artifact.sha256 for artifact in manifest})
    return manifest


_RANGE = re.compile(r"([0-9]*)-([0-9]*)(?<!^-)")


def check_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The first and last byte a Range header asks for, refusing one the file cannot satisfy
    with the API's error body; None for the whole file (no header, or several ranges: a
    server may answer those with the whole file, and one range is what download tools send).
    """
    if header is None:
        return None
    unit, _, ranges = header.partition("=")
    if unit.strip() != "bytes" or not ranges.strip():
        raise ServiceError(f"malformed Range header: {header!r}", code="invalid_range",
                           param="Range")
    spans = []
    for part in ranges.split(","):
        match = _RANGE.fullmatch(part.strip())
        if match is None:
            raise ServiceError(f"malformed Range header: {header!r}", code="invalid_range",
                               param="Range")
        start, end = match.groups()
        suffix_of_nothing = not start and (int(end) == 0 or size == 0)
        if suffix_of_nothing or (start and (int(start) >= size or (end and int(end) < int(start)))):
            raise RangeNotSatisfiable(f"the range {part.strip()} is outside the file's "
                                      f"{size} bytes", headers={"Content-Range": f"bytes */{size}"})
        spans.append((max(size - int(end), 0), size - 1) if not start
                     else (int(start), min(int(end), size - 1) if end else size - 1))
    return spans[0] if len(spans) == 1 else None
