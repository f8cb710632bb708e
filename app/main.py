"""create_app(): settings, database, store and broker wired in the lifespan; one error shape."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

from app import migrate
from app.artifacts.router import router as artifacts_router
from app.auth import KnownKeys, authenticate
from app.body_limit import BodySizeLimit
from app.broker import Broker
from app.config import Settings, get_settings
from app.cross_site import CrossSiteGuard
from app.dashboard.router import router as dashboard_router
from app.dashboard.router import static_route as dashboard_files
from app.datasets.router import router as datasets_router
from app.db import (
    make_engine,
    make_read_engine,
    make_read_session_factory,
    make_session_factory,
)
from app.deps import size_thread_pool
from app.dry_runs.router import router as dry_runs_router
from app.errors import ErrorBody, ErrorDetail, ServiceError, error_responses
from app.health import router as health_router
from app.jobs.router import router as jobs_router
from app.keys.router import router as keys_router
from app.metrics import HttpMetrics
from app.metrics import router as metrics_router
from app.openai_compat.router import router as openai_router
from app.openapi_doc import install as install_openapi
from app.params import reject_unknown_query_parameters
from app.ratelimit import make_rate_limiter
from app.storage import make_storage
from app.streams.responses import close_hub
from app.webhooks.router import router as webhooks_router
from app.workers.router import router as workers_router

logger = logging.getLogger("finetune.api")

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 413: "payload_too_large",
               415: "unsupported_media_type", 416: "range_not_satisfiable",
               429: "rate_limited"}


class UnmigratedDatabase(RuntimeError):
    pass


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.prepare_local_dirs()
        engine = make_engine(settings.database_url, settings.api_db_connections)
        size_thread_pool(settings.api_db_connections)
        if settings.migrate_on_start:
            migrate.upgrade(settings.database_url)
        elif (head := migrate.pending_revision(engine, settings.database_url)) is not None:
            engine.dispose()
            raise UnmigratedDatabase(
                f"the database is not migrated to the current schema ({head}); "
                "run `finetune migrate` first")
        app.state.settings = settings
        app.state.engine = engine
        app.state.session_factory = make_session_factory(engine)
        read_engine = make_read_engine(settings.database_url, settings.api_db_connections)
        app.state.read_session_factory = (None if read_engine is None
                                          else make_read_session_factory(read_engine))
        app.state.read_limiter = anyio.CapacityLimiter(settings.api_db_connections)
        # Readiness probes get a connection and threads of their own: they must neither
        # take a connection from the routes nor pile up threads on a hung server.
        app.state.probe_engine = make_engine(settings.database_url, 1)
        app.state.probe_limiter = anyio.CapacityLimiter(2)
        app.state.storage = make_storage(settings)
        app.state.broker = Broker(settings)
        app.state.rate_limiter = make_rate_limiter(settings)
        app.state.known_keys = KnownKeys()
        yield
        await app.state.rate_limiter.close()
        await close_hub(app.state)
        engine.dispose()
        if read_engine is not None:
            await read_engine.dispose()
        app.state.probe_engine.dispose()

    app = FastAPI(title="Fine-tuning job service", version="0.1.0", lifespan=lifespan,
                  description="Submit fine-tuning jobs, follow them, download the models.")
    app.include_router(health_router)
    app.include_router(dashboard_router)
    app.router.routes.append(dashboard_files)
    app.include_router(metrics_router)
    # Outside the loop below: it authenticates in its own way and answers OpenAI's errors,
    # and its list filters (`metadata[key]`) are query parameters no schema names.
    app.include_router(openai_router)
    # Every /v1 route authenticates its caller first (routes reuse the same, cached, caller),
    # so each can answer these.
    for router in (datasets_router, jobs_router, dry_runs_router, artifacts_router,
                   keys_router, webhooks_router, workers_router):
        app.include_router(router, responses=error_responses(401, 403, 422, 429),
                           dependencies=[Depends(authenticate),
                                         Depends(reject_unknown_query_parameters)])
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_json_bytes,
                       streamed=frozenset({("POST", "/v1/datasets"), ("POST", "/v1/files")}))
    app.add_middleware(CrossSiteGuard)
    # Outermost: it counts and times every answer, the body-size refusals included.
    app.add_middleware(HttpMetrics)
    _install_error_handlers(app)
    install_openapi(app, settings.public_url)
    return app


def _error(status: int, code: str, message: str, param: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, param=param))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _allowed_methods(routes: list[BaseRoute], scope: Scope) -> set[str]:
    matching = list(_matching_routes(routes, scope))
    # A fixed path (/v1/jobs/validate) names a resource of its own, even where a template
    # (/v1/jobs/{job_id}) also matches it.
    fixed = [route for route in matching if "{" not in route.path]
    return {method for route in fixed or matching
            for method in (route.methods or set()) - {"HEAD"}}


def _matching_routes(routes: list[BaseRoute], scope: Scope) -> Iterator[Route]:
    for route in routes:
        nested = getattr(route, "original_router", None)
        if nested is not None:
            yield from _matching_routes(nested.routes, scope)
        elif isinstance(route, Route) and route.matches(scope)[0] != Match.NONE:
            yield route


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return _error(400, "invalid_json", "the request body is not valid JSON: "
                          f"{first.get('ctx', {}).get('error', 'parse error')}")
        location = [str(part) for part in first.get("loc", ())]
        param = ".".join(location[1:]) or None
        cause = first.get("ctx", {}).get("error")
        if isinstance(cause, ValueError) and first.get("type") == "value_error":
            # A spec rule's own words, without pydantic's "Value error, " before them.
            return _error(422, "invalid_request", str(cause), getattr(cause, "param", param))
        if first.get("type") == "model_attributes_type" and location == ["body"]:
            return _error(422, "invalid_request", "the request body must be a JSON object, "
                          "sent with Content-Type: application/json")
        if first.get("type") == "extra_forbidden":
            message = f"unknown field '{param}'"
            code = "unknown_field"
        else:
            message = f"{param}: {first.get('msg', 'invalid value')}" if param else str(
                first.get("msg", "invalid request"))
            code = "invalid_request"
        return _error(422, code, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = exc.headers
        if exc.status_code == 405:
            # Starlette names only the first matching route's methods; a path served by
            # several routes (GET and POST /v1/jobs) must list them all.
            allowed = _allowed_methods(request.app.router.routes, request.scope)
            headers = {**(headers or {}), "Allow": ", ".join(sorted(allowed))}
        return _error(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(IntegrityError)
    async def concurrent_change(_: Request, exc: IntegrityError) -> JSONResponse:
        logger.info("integrity conflict: %s", exc.orig)
        return _error(409, "conflict", "the request conflicts with a change made at the same "
                      "moment (for example, its dataset was just deleted); read the objects "
                      "again and retry")

    @app.exception_handler(OperationalError)
    async def database_unavailable(_: Request, exc: OperationalError) -> JSONResponse:
        logger.warning("database unavailable: %s", exc.orig)
        return _error(503, "database_unavailable",
                      "the database cannot be reached right now; try again shortly",
                      headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error",
                      "the service failed on this request; the error is in its log")
