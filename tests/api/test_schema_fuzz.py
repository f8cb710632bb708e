"""Schemathesis against the app's own OpenAPI schema: every operation, valid and invalid input.

For each operation schemathesis sends its coverage cases (boundaries, missing and wrong-typed
values, undocumented methods) and random requests, positive and negative, and runs every check
on each answer: no 5xx, only documented status codes, content types and headers, bodies that
match the documented schemas, invalid input rejected with a 4xx, valid input not rejected,
and the API key actually enforced.

Random ids only reach the 404 of an operation on one object, so each such operation runs a
second time with its path ids replaced by those of objects that exist: a dataset and a
succeeded job with a model (the `finished_job` fixture), and an API key.

The requests go in-process to the `api` fixture's app (its migrated database, everything rolled
back after each operation) through `CurrentApp`, which skips the ASGI lifespan: schemathesis
starts an app's lifespan itself, and a second run of ours would replace the fixture's
rolled-back session factory with one that commits. In-process, a 500 surfaces as the exception
itself, with its traceback.

Knobs (environment): FT_FUZZ_EXAMPLES (random cases per operation, default 50),
FT_FUZZ_DATABASES (comma-separated database_url params, default "sqlite,postgres": PostgreSQL
refuses values that SQLite stores, such as NUL characters), FT_FUZZ_RANDOM=1 (new random cases
each run instead of the same ones).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import Settings
from app.db import transaction
from app.keys import service as keys
from app.keys import tokens
from app.main import create_app
from app.models import ApiKey
from tests.conftest import create_key

MAX_EXAMPLES = int(os.environ.get("FT_FUZZ_EXAMPLES", "50"))
DATABASES = [name.strip() for name in
             os.environ.get("FT_FUZZ_DATABASES", "sqlite,postgres").split(",") if name.strip()]


class CurrentApp:
    """The ASGI app schemathesis calls: the running test's app, without its lifespan.

    The `api` fixture's TestClient has run the real lifespan; returning from the lifespan
    scope without reading a message tells schemathesis the app has none.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)


# Serving the schema needs no lifespan and no database, and it does not depend on the settings.
current_app = CurrentApp(create_app())
schema = schemathesis.openapi.from_asgi("/openapi.json", current_app)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
schema.config.checks.update(included_check_names=["all"])
schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])

# Bounded and, unless FT_FUZZ_RANDOM=1, the same cases on every run: CI fails on a change of
# the app, not on a lucky draw. (`@schema.given` would switch off the coverage phase.)
fuzz_settings = hypothesis_settings(
    max_examples=MAX_EXAMPLES, deadline=None, database=None,
    derandomize=os.environ.get("FT_FUZZ_RANDOM") != "1",
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.filter_too_much, HealthCheck.data_too_large])

# Only the database params in DATABASES; each session-scoped database is migrated once.
pytestmark = pytest.mark.parametrize(
    "database_url",
    [pytest.param(name, marks=[pytest.mark.postgres] if name == "postgres" else [])
     for name in DATABASES],
    indirect=True)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No rate limit to run into: a fuzzed operation sends hundreds of requests in a minute."""
    return settings.model_copy(update={"rate_limit_per_minute": 10**9})


# The one place for credentials. Fixed keys, because schemathesis builds part of its cases
# (with their auth) when it collects the tests; `credentials` stores them in each test's
# database: one of team-a, the `api` fixture's project, and an admin's for /v1/keys.
PROJECT_KEY = tokens.KEY_START + "FuzzProj" + "p" * 40
ADMIN_KEY = tokens.KEY_START + "FuzzAdmn" + "a" * 40


@schema.auth(refresh_interval=None, retry_on=[])
class ApiKeyAuth:
    """Sends the key as auth rather than as a plain header, so that schemathesis knows it:
    a negative case whose Authorization was generated invalid or missing keeps it so (and
    must be refused), and the `ignored_auth` check resends cases without it."""

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        return ADMIN_KEY if case.path.startswith("/v1/keys") else PROJECT_KEY

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


@pytest.fixture
def credentials(api: TestClient) -> None:
    with transaction(api.app.state.session_factory) as session:
        for key, project, admin in ((PROJECT_KEY, "team-a", False),
                                    (ADMIN_KEY, "fuzz-admin", True)):
            session.add(ApiKey(prefix=tokens.prefix_of(key), secret_sha256=tokens.digest(key),
                               project_id=keys.ensure_project(session, project).id,
                               admin=admin))


@pytest.fixture
def app_under_test(api: TestClient) -> Iterator[None]:
    """Route schemathesis' requests to the `api` fixture's app for the length of one test."""
    served = current_app.app
    current_app.app = api.app
    try:
        yield
    finally:
        current_app.app = served


@pytest.fixture
def existing_ids(api: TestClient, finished_job: dict[str, Any]) -> dict[str, str]:
    """Path parameter values that name objects in the database, by parameter name."""
    dry_run = api.post("/v1/jobs/validate", json=finished_job["spec"]).json()
    dataset_id = finished_job["spec"]["dataset"]["train"]
    return {"dataset_id": dataset_id, "file_id": dataset_id, "job_id": finished_job["id"],
            "dry_run_id": dry_run["id"], "path": "config.json",
            "prefix": tokens.prefix_of(create_key(api.app, "team-a"))}


# Rules that a schema cannot state, so a schema-valid request may rightly get a 422: a spec's
# cross-field rules and its dataset ids, an uploaded file's content, an `after` cursor that
# must name an item of the caller's list, a stream's cursor.
BEYOND_THE_SCHEMA = {"POST /v1/jobs", "POST /v1/jobs/validate", "POST /v1/datasets",
                     "GET /v1/jobs", "GET /v1/datasets",
                     # A stream's Last-Event-ID must be a cursor the stream sent.
                     "GET /v1/jobs/{job_id}/events",
                     # The OpenAI-compatible routes: the same rules, in OpenAI's 400s.
                     "POST /v1/fine_tuning/jobs", "POST /v1/files", "GET /v1/fine_tuning/jobs",
                     "GET /v1/files", "GET /v1/fine_tuning/jobs/{job_id}/events",
                     "GET /v1/fine_tuning/jobs/{job_id}/checkpoints"}


def call_and_validate(case: schemathesis.Case) -> None:
    if case.path == "/v1/jobs" and str((case.query or {}).get("stream")).lower() == "true":
        # A project's live stream never ends by itself (tests/api/test_streams.py reads it
        # over HTTP): the page is what can be checked here.
        case.query["stream"] = "false"
    beyond = f"{case.method.upper()} {case.path}" in BEYOND_THE_SCHEMA
    case.call_and_validate(excluded_checks=[positive_data_acceptance] if beyond else None)


@pytest.mark.usefixtures("app_under_test", "credentials")
@schema.parametrize()
@fuzz_settings
def test_operation_conforms_to_schema(case: schemathesis.Case) -> None:
    call_and_validate(case)


@pytest.mark.usefixtures("app_under_test", "credentials")
@schema.include(path_regex=r"\{(dataset_id|file_id|job_id|dry_run_id|prefix)\}").parametrize()
@fuzz_settings
def test_operation_on_existing_objects(case: schemathesis.Case,
                                       existing_ids: dict[str, str]) -> None:
    # Edited in place: schemathesis notices and revalidates the case, so a negative case still
    # counts as negative only if something else in it is invalid.
    case.path_parameters.update(
        {name: existing_ids[name] for name in case.path_parameters if name in existing_ids})
    call_and_validate(case)


def test_schema_under_test_is_the_served_one(api: TestClient) -> None:
    response = api.get("/openapi.json")
    assert response.status_code == 200
    assert response.json() == schema.raw_schema
