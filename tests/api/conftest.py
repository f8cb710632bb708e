from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import job_with_published_model


@pytest.fixture
def finished_job(api: TestClient, tmp_path: Path) -> dict[str, Any]:
    """A job whose trainer wrote a model folder, published as the worker publishes it."""
    job = job_with_published_model(api, tmp_path)
    storage = api.app.state.storage
    # Something outside the model folder that must never be served.
    (storage.job_dir(job["id"]) / "secret.txt").write_text("not yours")
    return job
