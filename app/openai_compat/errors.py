"""OpenAI's error envelope for the OpenAI-compatible routes, without touching the app's handlers.

OpenAI's clients read `{"error": {"message", "type", "param", "code"}}` and pick the exception
class by HTTP status. The route class below lets the app's own handlers (app/main.py) answer a
failure as they always do, then reshapes that answer: the same message and code, OpenAI's
`type`, the field named as OpenAI names it, and the status OpenAI uses for a request it
refuses (400, where the native API says 422). A conflict that a retry cannot resolve (a
finished job's cancel) stays a 409 with `x-should-retry: false`, which stops the SDK's
retries.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.deps import SessionRoute
from app.errors import ServiceError


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    error: OpenAIErrorDetail


class UnsupportedByService(ServiceError):
    """Something OpenAI's API has that this service does not do: a method, a purpose, a model."""

    status_code = 400


# Conflicts a retry cannot resolve: the SDK would otherwise retry them twice for nothing.
_FINAL_CONFLICTS = frozenset({"job_already_finished", "dataset_in_use", "model_not_ready"})
# The native request fields as the OpenAI request names them.
_PARAMS = {"dataset.train": "training_file", "dataset.validation": "validation_file",
           "dataset_id": "file_id", "hyperparameters.epochs": "hyperparameters.n_epochs",
           "hyperparameters.learning_rate": "hyperparameters.learning_rate_multiplier",
           "hyperparameters.seed": "seed", "name": "suffix"}


def error_type(status: int) -> str:
    if status == 429:
        return "requests"
    return "server_error" if status >= 500 else "invalid_request_error"


def openai_param(param: str | None) -> str | None:
    if param is None:
        return None
    param = param.removeprefix("body.")
    return _PARAMS.get(param, param)


def reshaped(native: Response) -> Response:
    """The app's error answer in OpenAI's envelope; any other answer as it is."""
    if native.status_code < 400 or not isinstance(native, JSONResponse):
        return native
    error: dict[str, Any] = json.loads(bytes(native.body)).get("error", {})
    status = 400 if native.status_code == 422 else native.status_code
    body = OpenAIErrorBody(error=OpenAIErrorDetail(
        message=error.get("message", ""), type=error_type(status),
        param=openai_param(error.get("param")), code=error.get("code")))
    headers = {name: value for name, value in native.headers.items()
               if name.lower() not in ("content-length", "content-type")}
    if status == 409 and error.get("code") in _FINAL_CONFLICTS:
        headers["x-should-retry"] = "false"
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


async def native_error_answer(request: Request, exc: Exception) -> Response:
    """What the app's exception handlers answer for `exc` (its most specific handler)."""
    handlers = request.app.exception_handlers
    handler = next((handlers[kind] for kind in type(exc).__mro__ if kind in handlers), None)
    if handler is None:
        raise exc
    answer = handler(request, exc)
    return await answer if isinstance(answer, Awaitable) else answer


class OpenAIRoute(SessionRoute):
    """A SessionRoute whose failures answer in OpenAI's error envelope."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handle = super().get_route_handler()

        async def handle_in_openai_terms(request: Request) -> Response:
            try:
                return await handle(request)
            except Exception as exc:  # noqa: BLE001 - every failure, as the app answers it
                return reshaped(await native_error_answer(request, exc))

        return handle_in_openai_terms
