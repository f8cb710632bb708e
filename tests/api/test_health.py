from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.db import make_engine
from app.main import create_app
from tests.api.helpers import assert_error, job_spec, sentiment_dataset
from tests.conftest import create_key


def test_health_and_readiness(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"status": "ready"}


def test_openapi_documents_every_route(api: TestClient) -> None:
    schema = api.get("/openapi.json").json()
    for path in ("/v1/datasets", "/v1/datasets/{dataset_id}/preview", "/v1/jobs",
                 "/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/events",
                 "/v1/jobs/{job_id}/metrics", "/v1/jobs/{job_id}/artifacts",
                 "/v1/jobs/{job_id}/artifacts/{path}", "/v1/jobs/{job_id}/model"):
        assert path in schema["paths"], path
    assert api.get("/docs").status_code == 200


@pytest.fixture
def api_with_dead_broker(settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    # Its own database: what this test commits must not show up in other tests' lists.
    dead = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0",
                                       "database_url": f"sqlite:///{tmp_path / 'own.sqlite'}",
                                       "auto_migrate": True})
    with TestClient(create_app(dead)) as client:
        client.headers["Authorization"] = f"Bearer {create_key(client.app, 'team-a')}"
        yield client


def test_dead_broker(api_with_dead_broker: TestClient, tmp_path: Path) -> None:
    api = api_with_dead_broker
    ready = api.get("/readyz")
    assert_error(ready, 503, "not_ready")
    assert "broker" in ready.json()["error"]["message"]
    dataset = sentiment_dataset(api, tmp_path)
    error = assert_error(api.post("/v1/jobs", json=job_spec(dataset["id"])), 503,
                         "broker_unavailable")
    # The job was committed before the send: it is kept, queued, for a later send.
    job_id = error["message"].split()[1]
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"


def test_readiness_names_an_unreachable_database(api: TestClient) -> None:
    # Nothing listens on port 1: the probe's own connection is refused.
    api.app.state.probe_engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    ready = api.get("/readyz")
    assert_error(ready, 503, "not_ready")
    assert ready.json()["error"]["message"].startswith("database: OperationalError")
    assert api.get("/healthz").json() == {"status": "ok"}
