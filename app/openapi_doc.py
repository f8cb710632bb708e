"""The OpenAPI document as Postman imports it and Swagger UI shows it: requests that work on
the first Send once the base URL and the key are set.

On top of what FastAPI generates from the routes (the routers stay as they are):
- `servers`: FT_PUBLIC_URL, else the address the document was fetched from, so that an import
  by link, a saved copy and Swagger UI all target the service that served it;
- the API key once, for the whole document: Postman's import then sets the collection's auth
  and every request inherits it; the open routes say that they need none;
- an example of every request body (one per task for a job spec) and of every answer, from
  app/openapi_examples.py and the examples module of each part that has its own
  (app/webhooks/examples.py, app/openai_compat/examples.py), wherever a route declares none of its own;
- the first example of each request body also as its schema's `default`: by default Postman
  fills an imported body from its schema (import setting "Parameter generation: Schema") and
  ignores examples there, but it takes a schema's default as it is.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app import openapi_examples as examples
from app.openai_compat import examples as openai_examples
from app.webhooks import examples as webhook_examples

# What `app.openapi()` names without FT_PUBLIC_URL and without a request: `finetune up`'s API.
LOCAL_SERVER = "http://localhost:8000"
_AUTH = [{"ApiKey": []}]  # app/auth.py's bearer scheme
_HOW_TO = (
    "\n\nEvery /v1 request carries a project's API key: `Authorization: Bearer ftk_…`. In "
    "Swagger UI, press Authorize and paste the key. A collection imported into Postman sends "
    "the collection variable `bearerToken`: set it to the key. The job specs name their data "
    "`ds_TRAIN` and `ds_DEV`: upload the files with POST /v1/datasets and put the ids it "
    "answers in their place. Postman fills optional parameters with made-up values: untick "
    "those you do not mean, `after` in particular (it must name an item of the list), and "
    "set `Idempotency-Key` to `{{$guid}}`, a new key at each send.")


def install(app: FastAPI, public_url: str | None) -> None:
    """Serve the completed document at `app.openapi_url`, its server named per request."""

    @cache
    def completed() -> dict[str, Any]:
        return complete(copy.deepcopy(FastAPI.openapi(app)))

    def openapi() -> dict[str, Any]:
        return with_server(completed(), public_url or LOCAL_SERVER)

    async def served(request: Request) -> JSONResponse:
        # base_url carries the scheme, host and root path that the client used.
        server = public_url or str(request.base_url).rstrip("/")
        return JSONResponse(with_server(completed(), server))

    app.openapi = openapi  # type: ignore[method-assign]
    # FastAPI's own route serves app.openapi(), which cannot see the request.
    app.router.routes[:] = [route for route in app.router.routes
                            if getattr(route, "path", None) != app.openapi_url]
    app.add_route(app.openapi_url, served, include_in_schema=False)


def with_server(document: dict[str, Any], url: str) -> dict[str, Any]:
    head = {key: document[key] for key in ("openapi", "info")}
    server = {"url": url, "description": "This service"}
    return {**head, "servers": [server],
            **{key: value for key, value in document.items() if key not in head}}


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """`document` (FastAPI's) with the key required once, and examples everywhere."""
    document["info"]["description"] = document["info"].get("description", "") + _HOW_TO
    document["security"] = _AUTH
    bodies = {**examples.request_examples(), **webhook_examples.REQUEST_EXAMPLES,
                **openai_examples.REQUEST_EXAMPLES}
    answers = examples.operation_successes()
    successes = {**examples.success_examples(), **webhook_examples.SUCCESS_EXAMPLES}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            _inherit_auth(operation)
            for media in operation.get("requestBody", {}).get("content", {}).values():
                _complete_request_body(media, bodies.get((method, path)))
            for status, response in operation["responses"].items():
                for media in response.get("content", {}).values():
                    if "schema" in media and "example" not in media and "examples" not in media:
                        named = answers.get((method, path, status))
                        if named is not None:
                            media["examples"] = _named(named)
                        elif (answer := _answer(method, path, status, media["schema"],
                                                successes)) is not None:
                            media["example"] = answer
    return document


def _inherit_auth(operation: dict[str, Any]) -> None:
    own = operation.pop("security", [])
    if own != _AUTH:
        # An open route (`[]`: /healthz) or one with another scheme keeps its own.
        operation["security"] = own


def _complete_request_body(media: dict[str, Any],
                           named: dict[str, tuple[str, dict[str, Any]]] | None) -> None:
    """Examples where the route declares none; its first one as the schema's default."""
    if named is not None and "example" not in media and "examples" not in media:
        media["examples"] = _named(named)
    values = [example.get("value") for example in media.get("examples", {}).values()]
    first = media["example"] if "example" in media else next(iter(values), None)
    schema = media.get("schema", {})
    if first is None or "default" in schema:
        return
    # Postman's converter drops the siblings of a $ref: the default goes beside an allOf.
    media["schema"] = ({"allOf": [schema], "default": first} if "$ref" in schema
                       else {**schema, "default": first})


def _named(named: dict[str, tuple[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: {"summary": summary, "value": value}
            for name, (summary, value) in named.items()}


def _answer(method: str, path: str, status: str, schema: dict[str, Any],
            successes: dict[str, Any]) -> Any:
    """The example of the answer `schema` describes; None where there is none (the
    document's test then says which)."""
    name = schema.get("$ref", "").rpartition("/")[2]
    if name != "ErrorBody":
        return successes.get(name)
    code = int(status) if status.isdigit() else None  # not "default" nor "4XX"
    own = _OPERATION_ERRORS.get((method, path), {}).get(code)
    if own is not None:
        return own
    parameters = re.findall(r"\{(\w+)", path)
    if code == 404 and parameters:
        return _NOT_FOUND.get(parameters[-1])
    return examples.ERRORS.get(code)


# The errors of every part of the API, the webhooks' with the rest.
_OPERATION_ERRORS = {**examples.OPERATION_ERRORS, **webhook_examples.OPERATION_ERRORS}
_NOT_FOUND = {**examples.NOT_FOUND, **webhook_examples.NOT_FOUND}
