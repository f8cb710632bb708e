"""Small helpers for the training tests: specs with test-sized defaults, data files, events."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from app.jobs.spec import JobSpec
from worker.training.data import DataFile, DataFiles, format_from_suffix

# Tiny models learn the factories' cue words in a few epochs at this learning rate.
FAST_HYPERPARAMETERS = {"epochs": 3, "learning_rate": 5e-3, "batch_size": 16}


class RecordingSink:
    """An EventSink that keeps every event, for assertions."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.events.append((kind, message, data or {}))

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.events]

    def data_of(self, kind: str) -> list[dict[str, Any]]:
        return [data for event_kind, _, data in self.events if event_kind == kind]


def make_spec(task: str = "text-classification", **fields: Any) -> JobSpec:
    """A valid spec for the tiny model; `fields` replace top-level sections, merging dicts."""
    spec: dict[str, Any] = {"task": task, "model": "tiny-bert",
                            "dataset": {"train": "uploaded-train"},
                            "hyperparameters": dict(FAST_HYPERPARAMETERS), "logging_steps": 5}
    for name, value in fields.items():
        spec[name] = {**spec[name], **value} if isinstance(spec.get(name), dict) else value
    return JobSpec.model_validate(spec)


def data_files(train: Path | None = None, validation: Path | None = None,
               test: Path | None = None) -> DataFiles:
    def as_file(path: Path | None) -> DataFile | None:
        return DataFile(path, format_from_suffix(path)) if path is not None else None

    return DataFiles(train=as_file(train), validation=as_file(validation), test=as_file(test))


def torchrun(command: list[str], catalog: Path, ranks: int = 2) -> subprocess.CompletedProcess[str]:
    """`python -m torch.distributed.run` of `command` on `ranks` CPU ranks (gloo), with the
    model catalog `catalog`; it must succeed."""
    root = Path(__file__).resolve().parents[2]
    ran = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc-per-node={ranks}", *command],
        cwd=root, env={**os.environ, "FT_MODELS_DIR": str(catalog), "PYTHONPATH": str(root)},
        capture_output=True, text=True, timeout=300, check=False)
    assert ran.returncode == 0, ran.stderr[-3000:]
    return ran
