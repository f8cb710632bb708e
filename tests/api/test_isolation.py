"""Projects cannot see each other: another project's object answers exactly like no object."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import assert_error, job_spec, sentiment_dataset
from tests.conftest import create_key


@pytest.fixture
def other_project(api: TestClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_key(api.app, 'team-b')}"}


@pytest.fixture
def owned(api: TestClient, tmp_path: Path, finished_job: dict[str, Any]) -> dict[str, Any]:
    """Project A's objects: a dataset, a queued job, a succeeded job with a model, a dry run."""
    dataset = sentiment_dataset(api, tmp_path / "queued")
    queued = api.post("/v1/jobs", json=job_spec(dataset["id"])).json()
    dry_run = api.post("/v1/jobs/validate", json=job_spec(dataset["id"])).json()
    return {"dataset": dataset, "queued": queued, "finished": finished_job, "dry_run": dry_run}


def snapshot(api: TestClient, owned: dict[str, Any]) -> Any:
    """What project A sees of its objects; any change by project B would show here."""
    return [api.get(f"/v1/datasets/{owned['dataset']['id']}").json(),
            api.get(f"/v1/jobs/{owned['queued']['id']}").json(),
            api.get(f"/v1/jobs/{owned['queued']['id']}/events").json(),
            api.get(f"/v1/jobs/{owned['finished']['id']}/artifacts").json(),
            api.get(f"/v1/dry-runs/{owned['dry_run']['id']}").json()]


def id_routes(api: TestClient) -> list[tuple[str, str]]:
    paths = api.get("/openapi.json").json()["paths"]
    return [(method.upper(), path) for path, operations in paths.items()
            for method in operations
            if any(name in path for name in ("{job_id}", "{dataset_id}", "{dry_run_id}"))]


def test_every_route_with_an_id_answers_404_to_another_project(
        api: TestClient, owned: dict[str, Any], other_project: dict[str, str]) -> None:
    before = snapshot(api, owned)
    routes = id_routes(api)
    assert len(routes) >= 10
    for method, template in routes:
        job = owned["queued"] if method == "POST" else owned["finished"]  # cancel: a live one
        path = (template.replace("{job_id}", job["id"])
                .replace("{dataset_id}", owned["dataset"]["id"])
                .replace("{dry_run_id}", owned["dry_run"]["id"])
                .replace("{path}", "config.json"))
        theirs = api.request(method, path, headers=other_project)
        missing = api.request(method, re.sub(r"(job|ds|dry)_[0-9a-f]{32}", r"\1_" + "0" * 32,
                                             path), headers=other_project)
        assert theirs.status_code == 404, (method, path, theirs.text)
        assert theirs.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"
        # Word for word what a missing id gets, but for the id itself.
        assert (theirs.json()["error"]["message"].replace(job["id"], "ID")
                .replace(owned["dataset"]["id"], "ID").replace(owned["dry_run"]["id"], "ID")) == \
            re.sub(r"(job|ds|dry)_0{32}", "ID", missing.json()["error"]["message"])
    assert snapshot(api, owned) == before


def test_lists_show_only_the_callers_project(api: TestClient, owned: dict[str, Any],
                                             other_project: dict[str, str]) -> None:
    for path in ("/v1/jobs", "/v1/datasets"):
        assert api.get(path).json()["data"]
        assert api.get(path, headers=other_project).json() == {"data": [], "has_more": False}
    # An id of another project is no cursor either.
    for path, cursor in (("/v1/jobs", owned["queued"]["id"]),
                         ("/v1/datasets", owned["dataset"]["id"])):
        assert_error(api.get(path, params={"after": cursor}, headers=other_project), 422,
                     "invalid_request", "after")


def test_jobs_cannot_read_another_projects_dataset(api: TestClient, owned: dict[str, Any],
                                                   other_project: dict[str, str]) -> None:
    response = api.post("/v1/jobs", json=job_spec(owned["dataset"]["id"]),
                        headers=other_project)
    assert_error(response, 422, "dataset_not_found", "dataset.train")


def test_idempotency_keys_are_per_project(api: TestClient, tmp_path: Path,
                                          other_project: dict[str, str]) -> None:
    mine = sentiment_dataset(api, tmp_path)
    key = {"Idempotency-Key": "same-key"}
    first = api.post("/v1/jobs", json=job_spec(mine["id"]), headers=key).json()
    theirs = sentiment_dataset(api, tmp_path / "b", headers=other_project)
    second = api.post("/v1/jobs", json=job_spec(theirs["id"]), headers={**key, **other_project})
    assert second.status_code == 201, second.text
    assert second.json()["id"] != first["id"]
    assert second.json()["project_id"] != first["project_id"]


def test_jobs_record_project_and_key(api: TestClient, owned: dict[str, Any]) -> None:
    job = owned["queued"]
    assert job["project_id"].startswith("proj_")
    assert job["submitted_by"] == api.headers["Authorization"].split()[1][:12]


def test_admins_see_every_project(api: TestClient, owned: dict[str, Any],
                                  other_project: dict[str, str]) -> None:
    admin = {"Authorization": f"Bearer {create_key(api.app, 'ops', admin=True)}"}
    ids = {job["id"] for job in api.get("/v1/jobs", headers=admin).json()["data"]}
    assert {owned["queued"]["id"], owned["finished"]["id"]} <= ids
    assert api.get(f"/v1/jobs/{owned['finished']['id']}/model", headers=admin).status_code == 200
    cancelled = api.post(f"/v1/jobs/{owned['queued']['id']}/cancel", headers=admin)
    assert cancelled.json()["status"] == "cancelled"
