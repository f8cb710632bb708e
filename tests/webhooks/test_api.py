"""/v1/webhooks over HTTP: admin keys only, the secret shown once, URLs checked at
registration, one project's endpoints invisible to another, deliveries listed by page."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from tests.api.helpers import assert_error, job_spec, sentiment_dataset
from tests.conftest import create_key
from tests.webhooks.conftest import TEST_SETTINGS

URL = "http://127.0.0.1:9/hooks"
SENT_ON_END = ["job.succeeded", "job.failed", "job.cancelled"]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update=TEST_SETTINGS)


@pytest.fixture
def admin(api: TestClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_key(api.app, 'team-a', admin=True)}"}


def register(api: TestClient, admin: dict[str, str], **body: Any) -> dict[str, Any]:
    response = api.post("/v1/webhooks", headers=admin,
                        json={"url": URL, "event_types": SENT_ON_END, **body})
    assert response.status_code == 201, response.text
    return response.json()


def test_register_shows_the_secret_once(api: TestClient, admin: dict[str, str]) -> None:
    created = register(api, admin, description="platform")
    assert created["id"].startswith("wh_") and created["url"] == URL
    assert sorted(created["event_types"]) == sorted(SENT_ON_END)
    assert created["secret"].startswith("whsec_")
    assert len(base64.b64decode(created["secret"].removeprefix("whsec_"))) == 32
    shown = api.get(f"/v1/webhooks/{created['id']}", headers=admin).json()
    listed = api.get("/v1/webhooks", headers=admin).json()
    assert "secret" not in shown and created["secret"] not in str(listed)
    assert shown == {k: v for k, v in created.items() if k != "secret"}
    assert [w["id"] for w in listed["data"]] == [created["id"]] and not listed["has_more"]


def test_delete(api: TestClient, admin: dict[str, str]) -> None:
    created = register(api, admin)
    assert api.delete(f"/v1/webhooks/{created['id']}", headers=admin).status_code == 204
    assert_error(api.get(f"/v1/webhooks/{created['id']}", headers=admin), 404, "not_found")
    assert_error(api.delete(f"/v1/webhooks/{created['id']}", headers=admin), 404, "not_found")
    assert api.get("/v1/webhooks", headers=admin).json()["data"] == []


def test_only_admin_keys_manage_webhooks(api: TestClient, admin: dict[str, str]) -> None:
    webhook_id = register(api, admin)["id"]
    for method, path in (("POST", "/v1/webhooks"), ("GET", "/v1/webhooks"),
                         ("GET", f"/v1/webhooks/{webhook_id}"),
                         ("DELETE", f"/v1/webhooks/{webhook_id}"),
                         ("GET", f"/v1/webhooks/{webhook_id}/deliveries")):
        body = {"url": URL, "event_types": SENT_ON_END} if method == "POST" else None
        assert_error(api.request(method, path, json=body), 403, "admin_required")
    api.headers.pop("Authorization")
    assert_error(api.get("/v1/webhooks"), 401, "unauthorized")


def test_another_projects_admin_sees_none(api: TestClient, admin: dict[str, str]) -> None:
    webhook_id = register(api, admin)["id"]
    other = {"Authorization": f"Bearer {create_key(api.app, 'team-b', admin=True)}"}
    assert api.get("/v1/webhooks", headers=other).json()["data"] == []
    for path in (f"/v1/webhooks/{webhook_id}", f"/v1/webhooks/{webhook_id}/deliveries"):
        assert_error(api.get(path, headers=other), 404, "not_found")
    assert_error(api.delete(f"/v1/webhooks/{webhook_id}", headers=other), 404, "not_found")


@pytest.mark.parametrize(("url", "code"), [
    ("http://10.0.0.5/hooks", "webhook_url_not_allowed"),  # private: not in the allowed list
    ("http://169.254.169.254/latest/meta-data", "webhook_url_not_allowed"),
    ("http://[::ffff:10.0.0.5]/hooks", "webhook_url_not_allowed"),
    ("http://8.8.8.8/hooks", "webhook_url_not_allowed"),  # public: https only
    ("ftp://127.0.0.1/hooks", "invalid_webhook_url"),
    ("https://user:pw@127.0.0.1/hooks", "invalid_webhook_url"),
])
def test_a_url_the_service_may_not_use_is_refused(api: TestClient, admin: dict[str, str],
                                                  url: str, code: str) -> None:
    response = api.post("/v1/webhooks", headers=admin,
                        json={"url": url, "event_types": SENT_ON_END})
    assert_error(response, 422, code, param="url")
    assert api.get("/v1/webhooks", headers=admin).json()["data"] == []


def test_a_name_that_does_not_resolve_here_is_registered(api: TestClient,
                                                         admin: dict[str, str]) -> None:
    """The dispatcher may run where the API's resolver is not: its check before each attempt
    decides, and a name that resolves nowhere is never sent to."""
    assert register(api, admin, url="https://hooks.platform.internal/finetune")["id"]


@pytest.mark.parametrize(("body", "param"), [
    ({"url": URL, "event_types": []}, "event_types"),
    ({"url": URL, "event_types": ["job.exploded"]}, "event_types.0"),
    ({"url": URL}, "event_types"),
    ({"url": URL, "event_types": SENT_ON_END, "secret": "mine"}, "secret"),
    ({"url": "x" * 3000, "event_types": SENT_ON_END}, "url"),
])
def test_bad_bodies(api: TestClient, admin: dict[str, str], body: dict[str, Any],
                    param: str) -> None:
    response = api.post("/v1/webhooks", headers=admin, json=body)
    assert response.status_code == 422 and response.json()["error"]["param"] == param


def test_deliveries_are_listed_with_their_attempts(api: TestClient, admin: dict[str, str],
                                                   tmp_path: Path) -> None:
    webhook_id = register(api, admin, event_types=["job.queued", "job.cancelled"])["id"]
    dataset = sentiment_dataset(api, tmp_path)
    job_ids = [api.post("/v1/jobs", json=job_spec(dataset["id"])).json()["id"]
               for _ in range(2)]
    assert api.post(f"/v1/jobs/{job_ids[0]}/cancel").status_code == 200
    page = api.get(f"/v1/webhooks/{webhook_id}/deliveries?limit=2", headers=admin).json()
    assert page["has_more"] and len(page["data"]) == 2
    rest = api.get(f"/v1/webhooks/{webhook_id}/deliveries?limit=2"
                   f"&after={page['data'][-1]['id']}", headers=admin).json()
    deliveries = page["data"] + rest["data"]
    assert not rest["has_more"] and len(deliveries) == 3
    assert {(d["event_type"], d["job_id"]) for d in deliveries} == {
        ("job.queued", job_ids[0]), ("job.queued", job_ids[1]), ("job.cancelled", job_ids[0])}
    for delivery in deliveries:
        assert delivery["id"].startswith("msg_") and delivery["status"] == "pending"
        assert delivery["attempts"] == [] and delivery["next_attempt_at"] is not None
        assert delivery["payload"]["type"] == delivery["event_type"]
        assert delivery["payload"]["data"]["id"] == delivery["job_id"]
    pending = api.get(f"/v1/webhooks/{webhook_id}/deliveries?status=pending",
                      headers=admin).json()["data"]
    assert len(pending) == 3
    assert api.get(f"/v1/webhooks/{webhook_id}/deliveries?status=failed",
                   headers=admin).json()["data"] == []
    assert_error(api.get(f"/v1/webhooks/{webhook_id}/deliveries?stauts=failed",
                         headers=admin), 422, "unknown_field")

