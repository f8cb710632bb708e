"""The served OpenAPI document: its server, the key asked once, and examples that hold.

Every example is checked against the document's own schema (what Swagger UI and Postman read),
strictly: an object of a model takes no field the model does not have. The job specs are
checked by JobSpec too, and sent to the API once their data is uploaded: with the placeholder
ids replaced by real ones, every recipe is accepted, its columns included.
tests/postman/ sends the bodies as Postman imports them.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from fastapi.testclient import TestClient

from app import openapi_examples
from app.config import Settings
from app.jobs.spec import JobSpec
from app.jobs.tasks import TASK_NAMES
from app.main import create_app
from app.openapi_doc import LOCAL_SERVER
from tests.api.helpers import upload_file
from tests.factories import write_rows

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DATA = REPO / "examples" / "data"
Operation = tuple[str, str, dict[str, Any]]


def operations(document: dict[str, Any]) -> list[Operation]:
    return [(method, path, operation) for path, methods in document["paths"].items()
            for method, operation in methods.items()]


def examples_of(media: dict[str, Any]) -> dict[str, Any]:
    if "example" in media:
        return {"example": media["example"]}
    return {name: example["value"] for name, example in media.get("examples", {}).items()}


def strict_validator(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A validator of `schema` whose model objects refuse fields they do not declare, as the
    API's models do (pydantic ignores or refuses them, never returns them)."""
    components = copy.deepcopy(document["components"])

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node:
                node.setdefault("additionalProperties", False)
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(components)
    return jsonschema_rs.Draft202012Validator({**schema, "components": components})


def assert_valid(document: dict[str, Any], schema: dict[str, Any], example: Any,
                 where: str) -> None:
    problems = [f"{error.instance_path}: {error.message}"
                for error in strict_validator(document, schema).iter_errors(example)]
    assert not problems, f"{where}: {problems}"


@pytest.fixture
def document(api: TestClient) -> dict[str, Any]:
    response = api.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_the_document_names_its_server_and_asks_for_the_key_once(
        api: TestClient, document: dict[str, Any]) -> None:
    # The address it was fetched at: an import by link or Swagger UI targets this service.
    assert document["servers"][0]["url"] == "http://testserver"
    assert api.app.openapi()["servers"][0]["url"] == LOCAL_SERVER
    assert document["security"] == [{"ApiKey": []}]
    scheme = document["components"]["securitySchemes"]["ApiKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for method, path, operation in operations(document):
        if path.startswith("/v1/"):
            # Inherited: Postman's import puts the key on the collection, once.
            assert "security" not in operation, (method, path)
        else:
            assert operation["security"] == [], (method, path)


def test_a_public_url_names_the_server(settings: Settings) -> None:
    public = settings.model_copy(update={"public_url": "https://ft.example.com/tuning"})
    with TestClient(create_app(public)) as client:
        servers = client.get("/openapi.json").json()["servers"]
    assert servers == [{"url": "https://ft.example.com/tuning", "description": "This service"}]
    assert Settings(public_url="https://ft.example.com/").public_url == "https://ft.example.com"
    for wrong in ("ft.example.com", "ftp://ft.example.com", "https://ft.example.com/?a=1"):
        with pytest.raises(ValueError, match="FT_PUBLIC_URL"):
            Settings(public_url=wrong)


def test_every_request_body_has_examples_of_its_schema(document: dict[str, Any]) -> None:
    bodies = 0
    for method, path, operation in operations(document):
        for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
            where = f"{method.upper()} {path} {media_type}"
            named = examples_of(media)
            assert named, f"{where}: no example"
            # What Postman's default import ("Parameter generation: Schema") puts in the body.
            assert media["schema"].get("default") == next(iter(named.values())), where
            for name, example in named.items():
                assert_valid(document, media["schema"], example, f"{where} {name}")
            bodies += 1
    assert bodies >= 4


def test_one_job_example_per_task_the_sst2_recipe_first(document: dict[str, Any]) -> None:
    for path in ("/v1/jobs", "/v1/jobs/validate"):
        media = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        specs = examples_of(media)
        assert [spec["task"] for spec in specs.values()] == list(TASK_NAMES)
        first = next(iter(specs.values()))
        assert first["dataset"]["text_column"] == "sentence"  # SST-2's column
        for spec in specs.values():
            JobSpec.model_validate(spec)


def test_every_answer_has_examples_of_its_schema(document: dict[str, Any]) -> None:
    answers = 0
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            for media_type, media in response.get("content", {}).items():
                if "schema" not in media:  # a file download: nothing to give an example of
                    continue
                where = f"{method.upper()} {path} {status} {media_type}"
                named = examples_of(media)
                assert named, f"{where}: no example"
                for name, example in named.items():
                    assert_valid(document, media["schema"], example, f"{where} {name}")
                    if "error" in example and status.startswith(("4", "5")):
                        _assert_error_fits(path, int(status), example["error"], where)
                answers += 1
    assert answers >= 100


def _assert_error_fits(path: str, status: int, error: dict[str, Any], where: str) -> None:
    """A 404 names the path's own object; other errors name a code of their status."""
    if status == 404:
        assert error.get("param") == re.findall(r"\{(\w+)", path)[-1], where
    assert error["code"] and error["message"], where


def _upload(api: TestClient, path: Path) -> str:
    response = upload_file(api, path)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_job_examples_are_accepted_once_their_data_is_uploaded(api: TestClient,
                                                               tmp_path: Path) -> None:
    """The recipes fit the example data of the repository: with the placeholder ids replaced
    by those of uploaded files, POST /v1/jobs creates each job and the dry run takes it."""
    scores = write_rows(tmp_path / "scores.csv", [
        {"text": f"review number {n}", "score": n / 10} for n in range(20)])
    data = {"text-classification": (REPO / "examples/sst2/train.tsv",
                                    REPO / "examples/sst2/dev.tsv"),
            "text-regression": (scores, scores),
            "token-classification": (EXAMPLE_DATA / "ner.conll",) * 2,
            "question-answering": (EXAMPLE_DATA / "question-answering.jsonl",) * 2,
            "seq2seq": (EXAMPLE_DATA / "seq2seq.jsonl",) * 2,
            "masked-lm": (EXAMPLE_DATA / "masked-lm.jsonl",) * 2,
            "causal-lm": (EXAMPLE_DATA / "chat.jsonl",) * 2}
    uploaded = {path: _upload(api, path) for pair in data.values() for path in set(pair)}
    for task, (_, spec) in openapi_examples.JOB_SPECS.items():
        train, dev = data[task]
        ids = {openapi_examples.TRAIN: uploaded[train], openapi_examples.DEV: uploaded[dev]}
        spec = {**spec, "dataset": {field: ids.get(value, value) if isinstance(value, str)
                                    else value for field, value in spec["dataset"].items()}}
        created = api.post("/v1/jobs", json=spec)
        assert created.status_code == 201, (task, created.text)
        assert created.json()["spec"]["task"] == task
        dry_run = api.post("/v1/jobs/validate", json=spec)
        assert dry_run.status_code == 202, (task, dry_run.text)  # no worker runs here
