"""Schemathesis against the app's own OpenAPI schema: every operation, valid and invalid input.

For each operation schemathesis sends the schema's examples, its coverage cases (boundaries,
missing and wrong-typed values) and randomly generated requests, positive and negative, and
runs every check on each answer: no 5xx, only documented status codes and content types,
bodies and headers that match the documented schemas, invalid input rejected with a 4xx and
valid input not rejected.

Random ids only reach the 404 of an operation on one object, so each such operation runs a
second time with its path ids replaced by those of objects that exist: a dataset and a
succeeded job with a model (the `finished_job` fixture).

The requests go in-process to the `api` fixture's app (its migrated database, everything rolled
back after each operation), through an un-entered `ASGIClient`: entering one, or loading the
schema with `from_asgi`, would run the app's lifespan a second time, which replaces the
fixture's rolled-back session factory with one that commits.

Knobs (environment): FT_FUZZ_EXAMPLES (random cases per operation and mode, default 25),
FT_FUZZ_DATABASES (comma-separated database_url params, default "sqlite"; add "postgres" to
fuzz PostgreSQL too), FT_FUZZ_RANDOM=1 (new random cases each run instead of the same ones).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.python.asgi import ASGIClient

from app.main import create_app
from tests.api.test_artifacts import finished_job  # noqa: F401 - the fixture

# Sent with every request. The one place to put credentials once the API asks for them,
# e.g. {"Authorization": f"Bearer {key}"}.
AUTH: dict[str, str] = {}

BASE_URL = "http://testserver"
MAX_EXAMPLES = int(os.environ.get("FT_FUZZ_EXAMPLES", "25"))
DATABASES = [name.strip() for name in os.environ.get("FT_FUZZ_DATABASES", "sqlite").split(",")
             if name.strip()]

# The schema does not depend on the settings; loading it needs no lifespan and no database.
schema = schemathesis.openapi.from_dict(create_app().openapi())
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
schema.config.checks.update(included_check_names=["all"])
schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])

# Only the database params in DATABASES; each session-scoped database is migrated once.
pytestmark = pytest.mark.parametrize(
    "database_url",
    [pytest.param(name, marks=[pytest.mark.postgres] if name == "postgres" else [])
     for name in DATABASES],
    indirect=True)


@pytest.fixture
def app_client(api: TestClient) -> Iterator[ASGIClient]:
    """A requests session that calls the fixture's app in-process, without a second lifespan."""
    client = ASGIClient(api.app, base_url=BASE_URL)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def existing_ids(finished_job: dict[str, Any]) -> dict[str, str]:  # noqa: F811
    """Path parameter values that name objects in the database, by parameter name."""
    return {"dataset_id": finished_job["spec"]["dataset"]["train"], "job_id": finished_job["id"],
            "path": "config.json"}


# Bounded and, unless FT_FUZZ_RANDOM=1, the same cases on every run: CI fails on a change of
# the app, not on a lucky draw. (`@schema.given` would switch off the coverage phase.)
fuzz_settings = settings(
    max_examples=MAX_EXAMPLES, deadline=None, database=None,
    derandomize=os.environ.get("FT_FUZZ_RANDOM") != "1",
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.filter_too_much, HealthCheck.data_too_large])


@schema.parametrize()
@fuzz_settings
def test_operation_conforms_to_schema(case: schemathesis.Case, app_client: ASGIClient) -> None:
    case.call_and_validate(base_url=BASE_URL, session=app_client, headers=AUTH)


@schema.include(path_regex=r"\{(dataset_id|job_id)\}").parametrize()
@fuzz_settings
def test_operation_on_existing_objects(case: schemathesis.Case, app_client: ASGIClient,
                                       existing_ids: dict[str, str]) -> None:
    # Edited in place: schemathesis notices and revalidates the case, so a negative case still
    # counts as negative only if something else in it is invalid.
    case.path_parameters.update(
        {name: existing_ids[name] for name in case.path_parameters if name in existing_ids})
    case.call_and_validate(base_url=BASE_URL, session=app_client, headers=AUTH)


def test_schema_under_test_is_the_served_one(api: TestClient) -> None:
    response = api.get("/openapi.json", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == schema.raw_schema
