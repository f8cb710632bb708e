"""POST /v1/jobs/validate and GET /v1/dry-runs/{id}, answered by a real dry-run server.

The server (worker/dry_runs.py) runs in a thread of the test process against the test
database, as it runs in the worker's dry-run process: it claims the row the API committed,
computes the report with the tiny model, and stores it while the API waits.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.config import Settings
from app.db import make_engine, make_session_factory, transaction
from app.dry_runs import service as dry_runs
from app.jobs.spec import JobSpec
from app.main import create_app
from app.models import DryRun, Job
from tests.api.helpers import assert_error, job_spec, sentiment_dataset, upload_rows
from tests.conftest import create_key
from tests.factories import sentiment_rows
from worker.dry_runs import DryRunServer


def _served_by(settings: Settings) -> Iterator[DryRunServer]:
    engine = make_engine(settings.database_url)
    server = DryRunServer(settings, make_session_factory(engine), "test-worker:dry-runs")
    stopped = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stopped,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stopped.set()
        thread.join(timeout=30)
        engine.dispose()


@pytest.fixture
def served(settings: Settings) -> Iterator[TestClient]:
    """The app, committing for real (the server reads from its own connection), with a
    dry-run server running, as a client of a project of its own."""
    settings = settings.model_copy(update={"dry_run_wait_seconds": 60.0})
    app = create_app(settings)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {create_key(app, f'dry-{uuid.uuid4().hex[:8]}')}"
        sent: list[str] = []
        app.state.broker.enqueue = sent.append
        app.state.sent = sent
        for _ in _served_by(settings):
            yield client


def _count(client: TestClient, model: Any) -> int:
    with client.app.state.session_factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_the_report_comes_back_and_nothing_is_queued(served: TestClient, tmp_path: Path) -> None:
    dataset = sentiment_dataset(served, tmp_path, n=50)
    jobs_before = _count(served, Job)
    spec = job_spec(dataset["id"], hyperparameters={"batch_size": 8, "epochs": 2,
                                                    "gradient_accumulation_steps": 2})
    response = served.post("/v1/jobs/validate", json=spec)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "done" and body["id"].startswith("dry_")
    report = body["report"]
    assert report["valid"] and report["errors"] == []
    assert report["spec"]["evaluation"]["strategy"] == "epoch"  # resolved
    assert report["dataset"]["splits"] == {"train": 40, "validation": 10}
    assert report["dataset"]["columns"] == {"needed": {"text_column": "text",
                                                       "label_column": "label"},
                                            "found": {"train": ["text", "label"]}}
    # 40 rows in batches of 8 is 5 batches; 2 per step is 3 steps an epoch, 6 in all.
    assert report["steps"]["steps_per_epoch"] == 3 and report["steps"]["total_steps"] == 6
    assert report["parameters"]["trainable"] == report["parameters"]["total"] > 0
    assert report["memory"]["total_bytes"] > 0 and report["time"]["device"]
    assert _count(served, Job) == jobs_before and served.app.state.sent == []
    again = served.get(body["url"])
    assert again.status_code == 200 and again.json() == body


def test_a_dataset_that_would_fail_the_job_is_an_error(served: TestClient,
                                                       tmp_path: Path) -> None:
    one_class = upload_rows(served, tmp_path, [{"text": f"fine film {i}", "label": "positive"}
                                               for i in range(20)])
    response = served.post("/v1/jobs/validate", json=job_spec(one_class["id"]))
    assert response.status_code == 200, response.text
    report = response.json()["report"]
    assert not report["valid"]
    [error] = report["errors"]
    assert error["code"] == "dataset_invalid" and error["hint"]
    assert "steps" not in report or report["steps"] is None


def test_without_a_worker_it_answers_202_and_the_dry_run_is_polled(
        api: TestClient, tmp_path: Path) -> None:
    dataset = sentiment_dataset(api, tmp_path)
    response = api.post("/v1/jobs/validate", json=job_spec(dataset["id"]))
    assert response.status_code == 202, response.text
    pending = response.json()
    assert pending["status"] == "pending" and pending["report"] is None
    assert response.headers["Location"] == pending["url"] == f"/v1/dry-runs/{pending['id']}"
    assert api.get(pending["url"]).json()["status"] == "pending"
    # A worker comes up later and answers it.
    server = DryRunServer(api.app.state.settings, api.app.state.session_factory, "late")
    assert server.serve_one() and not server.serve_one()
    done = api.get(pending["url"]).json()
    assert done["status"] == "done" and done["report"]["valid"], done


def test_another_projects_dry_run_is_not_found(api: TestClient, tmp_path: Path) -> None:
    dataset = sentiment_dataset(api, tmp_path)
    mine = api.post("/v1/jobs/validate", json=job_spec(dataset["id"])).json()
    theirs = {"Authorization": f"Bearer {create_key(api.app, 'team-b')}"}
    error = assert_error(api.get(mine["url"], headers=theirs), 404, "not_found", "dry_run_id")
    missing = assert_error(api.get(f"/v1/dry-runs/dry_{'0' * 32}", headers=theirs), 404,
                           "not_found")
    assert error["message"].replace(mine["id"], "ID") == \
        missing["message"].replace(f"dry_{'0' * 32}", "ID")


@pytest.mark.parametrize(("change", "status", "code", "param"), [
    ({"epochz": 3}, 422, "unknown_field", "epochz"),
    ({"task": "summarise"}, 422, "invalid_request", "task"),
    ({"dataset": {"train": "ds_" + "0" * 32}}, 422, "dataset_not_found", "dataset.train"),
    ({"dataset": {"train": "DATASET", "text_column": "body"}}, 422, "column_not_found",
     "dataset.text_column"),
    ({"max_attempts": 99}, 422, "invalid_request", "max_attempts"),
])
def test_bad_specs_are_refused_as_a_submit_refuses_them(
        api: TestClient, tmp_path: Path, change: dict[str, Any], status: int, code: str,
        param: str) -> None:
    dataset = sentiment_dataset(api, tmp_path)
    spec = {**job_spec(dataset["id"]), **copy.deepcopy(change)}
    if spec["dataset"].get("train") == "DATASET":
        spec["dataset"]["train"] = dataset["id"]
    before = _count(api, DryRun)
    assert_error(api.post("/v1/jobs/validate", json=spec), status, code, param)
    assert _count(api, DryRun) == before


def test_a_dead_workers_claim_is_taken_over(api: TestClient, tmp_path: Path) -> None:
    dataset = sentiment_dataset(api, tmp_path)
    dry_run_id = api.post("/v1/jobs/validate", json=job_spec(dataset["id"])).json()["id"]
    factory = api.app.state.session_factory
    with transaction(factory) as session:
        assert dry_runs.claim_next(session, "dead", stale_seconds=3600).id == dry_run_id
    with transaction(factory) as session:
        assert dry_runs.claim_next(session, "alive", stale_seconds=3600) is None
    with transaction(factory) as session:
        assert dry_runs.claim_next(session, "alive", stale_seconds=0).id == dry_run_id
    spec = JobSpec.model_validate(job_spec(dataset["id"]))
    with transaction(factory) as session:
        assert not dry_runs.finish(session, dry_run_id, "dead", {"spec": {}})
        assert dry_runs.finish(session, dry_run_id, "alive",
                               {"spec": spec.model_dump(mode="json"), "valid": True,
                                "errors": [], "warnings": []})
    assert api.get(f"/v1/dry-runs/{dry_run_id}").json()["status"] == "done"


def test_rows_of_one_label_are_counted(served: TestClient, tmp_path: Path) -> None:
    rows = sentiment_rows(60, labels=("negative", "positive", "neutral"))
    rare = [row for row in rows if row["label"] != "neutral"] + [
        row for row in rows if row["label"] == "neutral"][:3]
    dataset = upload_rows(served, tmp_path, rare)
    report = served.post("/v1/jobs/validate",
                         json=job_spec(dataset["id"], dataset={"train": dataset["id"]})).json()
    counts = report["report"]["dataset"]["label_distribution"]["train"]
    assert counts == {"negative": 20, "neutral": 3, "positive": 20}
    assert [w["code"] for w in report["report"]["warnings"]] == ["rare_class"]
