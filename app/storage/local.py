"""The local store: one folder that is the whole artifact store (one machine, or a shared disk).

Every path is made here from ids the service created; client-given paths are only ever
resolved against a job's model folder and refused when they leave it.

The folder's layout is also every machine's own work area when the store is a bucket
(app/storage/s3.py): work folders, trainer logs, temporary uploads and the dataset cache stay
on the machine, and the methods that move files across machines are no-ops here.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from app.errors import InsufficientStorage, ServiceUnavailable

CHUNK_BYTES = 1024 * 1024
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# Libraries that write through their own I/O keep only the message of the OS's error
# (safetensors: "No space left on device (os error 28)").
_FULL_MESSAGES = tuple(os.strerror(number) for number in _FULL_ERRNOS)
# torch's checkpoint writer loses even that ("[enforce fail at inline_container.cc] unexpected
# pos"): its failure counts when the disk it wrote to is (almost) full.
_TORCH_WRITER = ("inline_container.cc", "PytorchStreamWriter")
_ALMOST_FULL_BYTES = 1024 * 1024


class StorageUnavailable(ServiceUnavailable):
    """The object store cannot be reached or refused a request: nothing was recorded."""

    code = "storage_unavailable"


class StorageFull(InsufficientStorage):
    """This machine's disk (FT_STORAGE_DIR) had no room for a file being written: the partial
    file is deleted and nothing is recorded."""

    code = "storage_full"


def is_disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether `exc`, or an error it was raised from, is a write that found the disk of
    `folder` full (or the user's quota spent)."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        text = str(link)
        if (isinstance(link, StorageFull)
                or (isinstance(link, OSError) and link.errno in _FULL_ERRNOS)
                or any(message in text for message in _FULL_MESSAGES)
                or (any(writer in text for writer in _TORCH_WRITER)
                    and _usage(folder)[0] < _ALMOST_FULL_BYTES)):
            return True
        link = link.__cause__ or link.__context__
    return False


def disk_space(folder: Path) -> str:
    """The free space of the disk holding `folder`, for a message."""
    free, total = _usage(folder)
    return f"{free:,} of {total:,} bytes free"


def storage_full(folder: Path, doing: str) -> StorageFull:
    """The API's answer to a write in `folder` that found the disk full; it names the setting
    rather than the server's path."""
    return StorageFull(f"the service's disk (FT_STORAGE_DIR) is full: {disk_space(folder)} "
                       f"while {doing}; nothing was kept. Send it again once the operator has "
                       "freed space in FT_STORAGE_DIR or given it a larger disk")


def _usage(folder: Path) -> tuple[int, int]:
    """Free and total bytes of the disk holding `folder`, or its nearest existing parent
    (the folder may be the one whose creation failed)."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    usage = shutil.disk_usage(folder)
    return usage.free, usage.total


@dataclass(frozen=True)
class StoredFile:
    """A file of the store as a download serves it: a path on this machine, or an object."""

    size: int
    path: Path | None = None
    key: str | None = None


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def prepare(self) -> str:
        """Make the store ready for a first use (`finetune migrate`); says what it is."""
        self.root.mkdir(parents=True, exist_ok=True)
        return f"artifact store: the folder {self.root}"

    # -- this machine's folders ------------------------------------------------------------

    def temp_path(self) -> Path:
        folder = self.root / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / uuid.uuid4().hex

    def dataset_path(self, dataset_id: str, fmt: str) -> Path:
        return self.root / "datasets" / dataset_id / f"data.{fmt}"

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def job_work_dir(self, job_id: str) -> Path:
        """Where the trainer child writes; nothing here is served."""
        return self.job_dir(job_id) / "work"

    def checkpoints_dir(self, job_id: str) -> Path:
        return self.job_work_dir(job_id) / "checkpoints"

    def job_log_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "trainer.log"

    def job_model_dir(self, job_id: str) -> Path:
        """The published model folder: it exists only once the job has succeeded."""
        return self.job_dir(job_id) / "model"

    def model_archive_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "model.tar.gz"

    # -- what crosses machines when the store is a bucket ----------------------------------

    def publish_dataset(self, temp: Path, dataset_id: str, fmt: str) -> None:
        target = self.dataset_path(dataset_id, fmt)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, target)

    def dataset_file(self, dataset_id: str, fmt: str) -> Path:
        """The dataset's stored file on this machine's disk, for reading."""
        return self.dataset_path(dataset_id, fmt)

    def delete_dataset(self, dataset_id: str) -> None:
        shutil.rmtree(self.root / "datasets" / dataset_id, ignore_errors=True)

    def keep_checkpoint(self, job_id: str, step: int, manifest: dict[str, str]) -> None:
        """Put the checkpoint folder `step-N` where any machine can resume from it."""

    def restore_checkpoint(self, job_id: str, step: int, manifest: dict[str, str]) -> None:
        """Bring the checkpoint's files that this machine lacks into its folder."""

    def drop_checkpoint(self, job_id: str, step: int) -> None:
        shutil.rmtree(self.checkpoints_dir(job_id) / f"step-{step}", ignore_errors=True)

    def keep_model(self, job_id: str, files: dict[str, str]) -> None:
        """Put the published model folder's files (path: sha256) and its archive where the
        API serves them."""

    # -- downloads ---------------------------------------------------------------------------

    def artifact(self, job_id: str, relative: str) -> StoredFile | None:
        path = self.resolve_artifact(job_id, relative)
        return None if path is None else StoredFile(path.stat().st_size, path=path)

    def model_archive(self, job_id: str) -> StoredFile | None:
        return _local_file(self.model_archive_path(job_id))

    def dataset_download(self, dataset_id: str, fmt: str) -> StoredFile | None:
        return _local_file(self.dataset_path(dataset_id, fmt))

    def read(self, file: StoredFile, start: int, end: int) -> Iterator[bytes]:
        """Bytes start..end (inclusive) of a stored file, in chunks."""
        # A local store only makes files with a path.
        assert file.path is not None  # nosec B101
        stream = file.path.open("rb")
        stream.seek(start)
        return _chunks(stream, end - start + 1)

    def presigned_url(self, file: StoredFile, filename: str) -> str | None:
        """A short-lived URL the client can fetch the file from directly; None: no such URL."""
        return None

    def resolve_artifact(self, job_id: str, relative: str) -> Path | None:
        """The file `relative` inside the job's model folder, or None if it is not one."""
        base = self.job_model_dir(job_id).resolve()
        if not relative or "\x00" in relative or relative.startswith(("/", "\\")):
            return None
        try:
            candidate = (base / relative).resolve()
            if not candidate.is_relative_to(base) or not candidate.is_file():
                return None
        except (OSError, ValueError):  # a name too long for the filesystem, and such
            return None
        return candidate


def _chunks(stream: BinaryIO, length: int) -> Iterator[bytes]:
    with stream:
        while length > 0 and (chunk := stream.read(min(CHUNK_BYTES, length))):
            length -= len(chunk)
            yield chunk


def _local_file(path: Path) -> StoredFile | None:
    return StoredFile(path.stat().st_size, path=path) if path.is_file() else None
