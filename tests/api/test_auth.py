"""API keys: every /v1 route needs one; missing, malformed, unknown and revoked keys get 401."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.auth import KEY_CACHE_SECONDS
from app.config import Settings
from app.db import transaction
from app.keys import service as keys
from app.keys import tokens
from app.main import create_app
from tests.api.helpers import assert_error
from tests.conftest import create_key


def v1_routes(api: TestClient) -> list[tuple[str, str]]:
    """Every (method, path) the API documents under /v1, with placeholders filled in."""
    paths = api.get("/openapi.json").json()["paths"]
    return [(method.upper(), re.sub(r"\{\w+\}", "x", path))
            for path, operations in paths.items() if path.startswith("/v1")
            for method in operations]


def test_every_v1_route_needs_a_key(api: TestClient) -> None:
    routes = v1_routes(api)
    assert len(routes) >= 15
    del api.headers["Authorization"]
    for method, path in routes:
        # Authentication comes before anything else is looked at.
        response = api.request(method, path, params={"unknown": "1"})
        error = assert_error(response, 401, "unauthorized")
        assert "Authorization: Bearer" in error["message"], (method, path)
        assert response.headers["WWW-Authenticate"] == "Bearer", (method, path)


def test_health_stays_open(api: TestClient) -> None:
    del api.headers["Authorization"]
    assert api.get("/healthz").status_code == 200
    assert api.get("/readyz").status_code == 200


@pytest.mark.parametrize("header", [
    "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "ftk_" + "a" * 48, "Token ftk_" + "a" * 48,
])
def test_missing_or_malformed_header(api: TestClient, header: str) -> None:
    response = api.get("/v1/jobs", headers={"Authorization": header})
    assert_error(response, 401, "unauthorized")


@pytest.mark.parametrize("key", [
    "nonsense", "ftk_" + "a" * 48, "ftk_" + "a" * 47, "ftk_" + "é" * 48, "x" * 5000,
])
def test_unknown_or_malformed_key(api: TestClient, key: str) -> None:
    response = api.get("/v1/jobs", headers={"Authorization": f"Bearer {key}".encode("latin-1")})
    error = assert_error(response, 401, "invalid_api_key")
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert key not in error["message"]


def test_right_prefix_wrong_secret(api: TestClient) -> None:
    key = create_key(api.app, "team-a")
    forged = key[:12] + ("b" if key[12] != "b" else "c") + key[13:]
    assert_error(api.get("/v1/jobs", headers={"Authorization": f"Bearer {forged}"}), 401,
                 "invalid_api_key")


def test_revoked_key_is_refused_from_the_next_request(api: TestClient) -> None:
    admin = {"Authorization": f"Bearer {create_key(api.app, 'ops', admin=True)}"}
    created = api.post("/v1/keys", json={"project": "team-c"}, headers=admin).json()
    own = {"Authorization": f"Bearer {created['key']}"}
    assert api.get("/v1/jobs", headers=own).status_code == 200
    revoked = api.delete(f"/v1/keys/{created['prefix']}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    error = assert_error(api.get("/v1/jobs", headers=own), 401, "api_key_revoked")
    assert created["prefix"] in error["message"] and created["key"] not in error["message"]
    # Revoking again changes nothing.
    again = api.delete(f"/v1/keys/{created['prefix']}", headers=admin).json()
    assert again["revoked_at"] == revoked.json()["revoked_at"]


def test_a_key_revoked_elsewhere_is_refused_within_a_second(api: TestClient) -> None:
    """`finetune keys revoke` and the other API processes write the database, not this
    process's memory of live keys: it stops accepting the key within KEY_CACHE_SECONDS."""
    secret = create_key(api.app, "team-r")
    own = {"Authorization": f"Bearer {secret}"}
    assert api.get("/v1/jobs", headers=own).status_code == 200
    with transaction(api.app.state.session_factory) as session:
        keys.revoke(session, tokens.prefix_of(secret))
    deadline = time.monotonic() + KEY_CACHE_SECONDS + 0.5
    while (answer := api.get("/v1/jobs", headers=own)).status_code == 200:
        assert time.monotonic() < deadline, "the revoked key was still accepted"
        time.sleep(0.05)
    assert_error(answer, 401, "api_key_revoked")


class TestKeyManagement:
    @pytest.fixture
    def admin(self, api: TestClient) -> dict[str, str]:
        return {"Authorization": f"Bearer {create_key(api.app, 'ops', admin=True)}"}

    def test_project_keys_cannot_manage_keys(self, api: TestClient) -> None:
        assert_error(api.get("/v1/keys"), 403, "admin_required")
        assert_error(api.post("/v1/keys", json={"project": "x"}), 403, "admin_required")
        assert_error(api.delete("/v1/keys/ftk_12345678"), 403, "admin_required")

    def test_create_shows_the_key_once_and_stores_only_a_hash(
            self, api: TestClient, admin: dict[str, str]) -> None:
        response = api.post("/v1/keys", json={"project": "team-b", "name": "ci"}, headers=admin)
        assert response.status_code == 201, response.text
        created = response.json()
        assert re.fullmatch(r"ftk_[A-Za-z0-9]{48}", created["key"])
        assert created["prefix"] == created["key"][:12]
        assert created | {"key": None} == created | {
            "key": None, "project": "team-b", "admin": False, "name": "ci",
            "last_used_at": None, "revoked_at": None}
        listed = api.get("/v1/keys", headers=admin).json()["data"]
        mine = [k for k in listed if k["prefix"] == created["prefix"]]
        assert mine and "key" not in mine[0]
        assert created["key"] not in api.get("/v1/keys", headers=admin).text
        with api.app.state.session_factory() as session:
            from app.models import ApiKey

            stored = session.query(ApiKey).filter_by(prefix=created["prefix"]).one()
            assert created["key"] not in repr(vars(stored))

    def test_list_filters_by_project_and_records_last_use(
            self, api: TestClient, admin: dict[str, str]) -> None:
        created = api.post("/v1/keys", json={"project": "team-b"}, headers=admin).json()
        api.get("/v1/jobs", headers={"Authorization": f"Bearer {created['key']}"})
        listed = api.get("/v1/keys", params={"project": "team-b"}, headers=admin).json()["data"]
        assert [k["prefix"] for k in listed] == [created["prefix"]]
        assert listed[0]["last_used_at"] is not None

    @pytest.mark.parametrize("body", [
        {"project": "Has Spaces"}, {"project": ""}, {"project": "a" * 65},
        {"project": "../etc"}, {"project": "ok", "admin": "yes"}, {"project": "ok", "x": 1},
    ])
    def test_bad_create_bodies(self, api: TestClient, admin: dict[str, str],
                               body: dict[str, object]) -> None:
        response = api.post("/v1/keys", json=body, headers=admin)
        assert response.status_code == 422, response.text

    def test_revoke_unknown(self, api: TestClient, admin: dict[str, str]) -> None:
        assert_error(api.delete("/v1/keys/ftk_nothere1", headers=admin), 404, "not_found")

    def test_admin_key_made_over_the_api_works(self, api: TestClient,
                                               admin: dict[str, str]) -> None:
        created = api.post("/v1/keys", json={"project": "ops2", "admin": True},
                           headers=admin).json()
        assert api.get("/v1/keys", headers={"Authorization": f"Bearer {created['key']}"}) \
            .status_code == 200


def test_keys_never_reach_the_logs(api: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    key = api.headers["Authorization"].split()[1]
    with caplog.at_level(logging.DEBUG):
        api.get("/v1/jobs")
        api.get("/v1/jobs/job_nothere")
        api.get("/v1/jobs", headers={"Authorization": f"Bearer {key[:-1]}x"})
    assert key[12:] not in caplog.text and key[12:-1] not in caplog.text


class TestAuthenticationOff:
    @pytest.fixture
    def open_settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"require_api_keys": False})

    @pytest.fixture
    def local(self, open_settings: Settings) -> Iterator[TestClient]:
        with TestClient(create_app(open_settings), client=("127.0.0.1", 40000)) as client:
            yield client

    def test_loopback_callers_act_as_the_default_project(self, local: TestClient) -> None:
        response = local.get("/v1/jobs")
        assert response.status_code == 200, response.text

    def test_other_callers_are_refused(self, open_settings: Settings) -> None:
        with TestClient(create_app(open_settings), client=("10.1.2.3", 40000)) as remote:
            assert_error(remote.get("/v1/jobs"), 403, "loopback_only")

    def test_the_api_refuses_to_listen_beyond_loopback(self, tmp_path) -> None:
        for command in ("api", "up"):
            result = subprocess.run(
                [sys.executable, "-m", "app.cli", command, "--host", "0.0.0.0"],
                env={"FT_REQUIRE_API_KEYS": "false", "PATH": "/usr/bin:/bin"}, cwd=tmp_path,
                capture_output=True, text=True, timeout=60, check=False)
            assert result.returncode != 0
            assert "only allowed on loopback" in result.stderr
