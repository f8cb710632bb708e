"""The OpenAPI document as Postman imports it: every example body, sent as it is, is accepted.

openapi-to-postmanv2 is the converter the Postman app runs on an import (pinned in
package.json here; `npm ci --prefix tests/postman` installs it). The document is fetched from
a real API process (`finetune api` on PostgreSQL, as deployed, with no worker) by its URL, as
Postman's "Import > Link" does, and converted twice: with the converter's defaults, which the
Postman app imports with ("Parameter generation: Schema": each body made from its schema),
and with "Parameter generation: Example" (each body from the document's examples, and every
request example a saved example of its request). Every body of both collections, the
requests' own and their saved examples', is sent as it is, with the request's imported URL,
query and headers, to the collection's `{{baseUrl}}` (the document's server, left as
imported), with the collection's auth and `{{bearerToken}}` set to a key, once, as a user
does. A saved example is sent as a user sends one: its body in its request.

Two things are left to the user and done as a user does them: picking the file of an upload
form (its file part is empty; the test picks examples/sst2/train.tsv, or a chat file for the
OpenAI-compatible POST /v1/files), and the multipart boundary, which Postman adds to the
imported `Content-Type: multipart/form-data`.

"Refused for its content": any answer but a 2xx, with one exception, a 422
`dataset_not_found` (400 `file_not_found` on the OpenAI-compatible routes). The job specs
name their data by placeholder ids (ds_TRAIN, ds_DEV) that no server has until the user
uploads the files and puts the ids it answers in their place, and that answer says exactly
that, naming the field (`param`: dataset.train). Anything else fails: a 400 or 413, a 422
about any other field (a value out of range, an unknown field, a column), an error of the key
or of the server. That the specs are accepted once their ids are real, columns included, is
tested in tests/api/test_openapi_examples.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.jobs.tasks import TASK_NAMES
from app.openapi_examples import JOB_SPECS
from tests.conftest import postgres_database
from tests.e2e.service import REPO, finetune, free_port, service_env, stop, wait_ready

pytestmark = pytest.mark.postgres

CONVERTER = (Path(__file__).resolve().parent
             / "node_modules/openapi-to-postmanv2/bin/openapi2postmanv2.js")
# The file a user picks for an upload form, by route; the SST-2 training file elsewhere.
UPLOADS = {"v1/files": REPO / "examples/data/chat.jsonl"}
UPLOAD = REPO / "examples/sst2/train.tsv"
# The refusals that are not about a body's content: a placeholder dataset id, as the native
# API says it, and as the OpenAI-compatible one does (OpenAI's status for it is 400).
PLACEHOLDER_REFUSALS = {(422, "dataset_not_found"), (400, "file_not_found")}
MODES = ("Schema", "Example")
Sent = tuple[str, str, str, str]  # (mode, method, path, body as sent)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`finetune api` on a new, migrated PostgreSQL database: its URL and an admin key."""
    workdir = tmp_path_factory.mktemp("postman")
    with postgres_database() as database_url:
        env = service_env({"FT_DATABASE_URL": database_url,
                           "FT_BROKER_URL": f"sqla+sqlite:///{workdir / 'broker.sqlite'}",
                           "FT_STORAGE_DIR": str(workdir / "storage"),
                           # No worker runs: a dry run answers 202 at once.
                           "FT_DRY_RUN_WAIT_SECONDS": "0"})
        _cli(env, workdir, "migrate")
        key = _cli(env, workdir, "keys", "create", "--project", "postman", "--admin")
        port = free_port()
        log = workdir / "api.log"
        api = finetune("api", "--port", str(port), env=env, cwd=workdir, log=log)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                wait_ready(client, api, log)
            yield f"http://127.0.0.1:{port}", key.splitlines()[-1]
        finally:
            stop(api)


def _cli(env: dict[str, str], workdir: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, cwd=workdir,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def convert(document: Path, mode: str) -> dict[str, Any]:
    """The collection the Postman app makes of `document`, with `mode` as its "Parameter
    generation" import setting."""
    if shutil.which("node") is None or not CONVERTER.is_file():
        pytest.fail("the converter is not installed: run `npm ci --prefix tests/postman` "
                    "(Node.js 18 or later)")
    collection = document.with_name(f"collection-{mode}.json")
    done = subprocess.run(["node", str(CONVERTER), "-s", str(document), "-o", str(collection),
                           "-O", f"parametersResolution={mode}"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and collection.is_file(), done.stdout + done.stderr
    return json.loads(collection.read_text())


def items(nodes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for node in nodes:
        yield from items(node["item"]) if "item" in node else (node,)


def resolve(text: str, variables: dict[str, str]) -> str:
    """`text` with Postman's {{variables}} filled in; one left unset fails, as in Postman,
    where it would be sent as it is."""
    resolved = re.sub(r"\{\{([^{}]+)\}\}", lambda match: variables.get(match[1], match[0]),
                      text)
    assert "{{" not in resolved, f"an unset Postman variable in {text!r}"
    return resolved


def send(client: httpx.Client, request: dict[str, Any], body: dict[str, Any],
         variables: dict[str, str]) -> httpx.Response:
    """`request` (a collection's) with `body`, as Postman sends it."""
    url = request["url"]
    path = "/".join(resolve(part, variables) for part in url["path"])
    path = re.sub(r":(\w+)", lambda match: next(
        v["value"] for v in url["variable"] if v["key"] == match[1]), path)
    query = {q["key"]: resolve(q["value"], variables)
             for q in url.get("query", []) if not q.get("disabled")}
    headers = {h["key"]: resolve(h["value"], variables)
               for h in request["header"] if not h.get("disabled")}
    headers["Authorization"] = f"Bearer {variables['bearerToken']}"
    base = resolve("/".join(url["host"]), variables)
    if body["mode"] == "raw":
        return client.request(request["method"], f"{base}/{path}", params=query,
                              headers=headers, content=resolve(body["raw"], variables))
    assert body["mode"] == "formdata", body
    headers.pop("Content-Type", None)  # Postman sends its own, with the boundary
    fields = {p["key"]: resolve(p["value"], variables)
              for p in body["formdata"] if p["type"] == "text" and not p.get("disabled")}
    upload = UPLOADS.get(path, UPLOAD)
    files = {p["key"]: (upload.name, upload.read_bytes())
             for p in body["formdata"] if p["type"] == "file"}
    return client.request(request["method"], f"{base}/{path}", params=query, headers=headers,
                          data=fields, files=files)


def bodies(item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The request's body and those of its saved examples."""
    for request in (item["request"], *(saved["originalRequest"]
                                       for saved in item.get("response", []))):
        if request.get("body"):
            yield request["body"]


def test_every_imported_example_body_is_accepted(service: tuple[str, str],
                                                 tmp_path: Path) -> None:
    url, key = service
    document = tmp_path / "openapi.json"
    document.write_bytes(httpx.get(f"{url}/openapi.json").content)
    sent: dict[Sent, tuple[int, str]] = {}
    with httpx.Client(timeout=60) as client:
        for mode in MODES:
            collection = convert(document, mode)
            # The key is set once, on the collection, and every request inherits it.
            assert collection["auth"]["type"] == "bearer"
            assert [entry["value"] for entry in collection["auth"]["bearer"]
                    if entry["key"] == "token"] == ["{{bearerToken}}"]
            variables = {v["key"]: v["value"] for v in collection["variable"]}
            assert variables["baseUrl"] == url
            variables["bearerToken"] = key
            for item in items(collection["item"]):
                assert item["request"].get("auth") is None, item["name"]
                seen: set[str] = set()
                for body in bodies(item):
                    as_sent = json.dumps(body, sort_keys=True)
                    if as_sent in seen:
                        continue
                    seen.add(as_sent)
                    answer = send(client, item["request"], body, variables)
                    where = (mode, item["request"]["method"],
                             "/".join(item["request"]["url"]["path"]), as_sent)
                    sent[where] = (answer.status_code, answer.text)
    refused = {where: answer for where, answer in sent.items()
               if not 200 <= answer[0] < 300
               and (answer[0], _error_code(answer[1])) not in PLACEHOLDER_REFUSALS}
    assert not refused, json.dumps([[*where, *answer] for where, answer in refused.items()],
                                   indent=1)[:6000]
    _assert_every_body_was_sent(json.loads(document.read_text()), sent)


def _error_code(answer: str) -> str | None:
    try:
        return json.loads(answer)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def _assert_every_body_was_sent(document: dict[str, Any], sent: dict[Sent, Any]) -> None:
    """Each import sent a body to every operation that takes one. Imported with examples,
    every job spec example went to both job routes; imported from the schemas, the body is
    the first example (the SST-2 recipe), not a dump of the schema."""
    # As the collection names paths: v1/jobs/:job_id.
    with_body = {(method.upper(), re.sub(r"\{(\w+)\}", r":\1", path.strip("/")))
                 for path, operations in document["paths"].items()
                 for method, operation in operations.items() if "requestBody" in operation}
    for mode in MODES:
        assert with_body <= {(method, path) for sent_in, method, path, _ in sent
                             if sent_in == mode}, mode
    for path in ("v1/jobs", "v1/jobs/validate"):
        specs = {mode: [json.loads(json.loads(body)["raw"]) for sent_in, method, route, body
                        in sent if (sent_in, method, route) == (mode, "POST", path)]
                 for mode in MODES}
        assert {spec["task"] for spec in specs["Example"]} == set(TASK_NAMES), path
        assert specs["Schema"] == [next(iter(JOB_SPECS.values()))[1]], path
