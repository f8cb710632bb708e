"""The embedded default: no FT_ settings at all, SQLite and Celery's SQLAlchemy transport."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import TINY_MODEL
from tests.e2e.flows import train_download_predict
from tests.e2e.service import running_service

pytestmark = pytest.mark.e2e


def test_embedded_default_end_to_end(tmp_path: Path, model_catalog: Path) -> None:
    workdir = tmp_path / "service"
    # The default catalog is ./var/models: put the tiny model where the defaults look.
    shutil.copytree(model_catalog / TINY_MODEL, workdir / "var" / "models" / TINY_MODEL)
    with running_service({}, workdir) as service:
        finished = train_download_predict(service, tmp_path)
    assert (workdir / "var" / "finetune.sqlite").is_file()
    assert (workdir / "var" / "broker.sqlite").is_file()
    assert (workdir / "var" / "storage" / "jobs" / finished["id"] / "model.tar.gz").is_file()
