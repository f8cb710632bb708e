"""The artifact store: uploaded datasets, job work folders and published models.

Every path is made here from ids the service created; client-given paths are only ever
resolved against a job's model folder and refused when they leave it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def temp_path(self) -> Path:
        folder = self.root / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / uuid.uuid4().hex

    def dataset_path(self, dataset_id: str, fmt: str) -> Path:
        return self.root / "datasets" / dataset_id / f"data.{fmt}"

    def publish_dataset(self, temp: Path, dataset_id: str, fmt: str) -> Path:
        target = self.dataset_path(dataset_id, fmt)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, target)
        return target

    def delete_dataset(self, dataset_id: str) -> None:
        shutil.rmtree(self.root / "datasets" / dataset_id, ignore_errors=True)

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def job_work_dir(self, job_id: str) -> Path:
        """Where the trainer child writes; nothing here is served."""
        return self.job_dir(job_id) / "work"

    def job_log_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "trainer.log"

    def job_model_dir(self, job_id: str) -> Path:
        """The published model folder: it exists only once the job has succeeded."""
        return self.job_dir(job_id) / "model"

    def model_archive_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "model.tar.gz"

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
