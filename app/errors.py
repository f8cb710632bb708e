"""The one error family of the API and the one error body: {"error": {"code", "message", "param"?}}."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    code: str
    message: str
    param: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class ServiceError(Exception):
    """A failure the client can act on; subclasses fix the HTTP status and the default code."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return ErrorBody(error=ErrorDetail(code=self.code, message=self.message,
                                           param=self.param)).model_dump(exclude_none=True)


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class Conflict(ServiceError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "payload_too_large"


class InvalidRequest(ServiceError):
    status_code = 422
    code = "invalid_request"


class RangeNotSatisfiable(ServiceError):
    status_code = 416
    code = "range_not_satisfiable"


class TooManyRequests(ServiceError):
    status_code = 429
    code = "rate_limited"


class ServiceUnavailable(ServiceError):
    status_code = 503
    code = "service_unavailable"


class InsufficientStorage(ServiceError):
    status_code = 507
    code = "insufficient_storage"


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries so that every documented error carries the error body."""
    return {status: {"model": ErrorBody} for status in statuses}
