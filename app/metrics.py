"""GET /metrics in the Prometheus text format: the API's requests, counted and timed in each
process by a middleware, and the jobs' figures, read from the database at each scrape
(app/job_metrics.py).

Several API processes behind one port (`uvicorn --workers N`, gunicorn) use prometheus_client's
multiprocess mode. prometheus_client picks its mode once, when it is first imported, from
PROMETHEUS_MULTIPROC_DIR; so whatever starts the API processes sets that variable, to a folder
it has emptied (`reset_multiprocess_dir`), before any of them starts. Each process then keeps
its counts in files there, and a scrape, whichever process answers it, adds up the files of
all. The database figures need none of this: the process that answers computes them.
"""

from __future__ import annotations

import hmac
import os
import time
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.deps import SessionDep, SessionRoute
from app.errors import Forbidden, Unauthorized
from app.job_metrics import JobCollector
from app.network import is_loopback

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Read when prometheus_client was, just above: the mode its metrics were made in.
_MULTIPROCESS = MULTIPROCESS_ENV in os.environ

# No `_created` series: multiprocess mode has none, and they would double the series.
disable_created_metrics()

# A request's route is its template (/v1/jobs/{job_id}), never its path: job ids in labels
# would make a series per job. Methods outside these (anything a client sends) count as one.
_UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

REQUESTS = Counter("finetune_http_requests", "HTTP requests answered, by route template, "
                   "method and status", ("route", "method", "status"), registry=None)
LATENCY = Histogram("finetune_http_request_duration_seconds",
                    "Time from a request's arrival to the end of its answer (its whole body, "
                    "for downloads and streams), by route template and method",
                    ("route", "method"), registry=None)


def reset_multiprocess_dir(folder: Path) -> None:
    """Create or empty the multiprocess folder. Called once, before any API process starts:
    the counts of an earlier run would otherwise be added in, under pids that the new
    processes may well reuse."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()


class HttpMetrics:
    """Counts and times every HTTP request. It only watches the answer's first message (for
    the status) and passes every message on as it comes: uploads and streamed answers flow
    through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # An exception that escapes the app is answered 500 outside this middleware.
        status = 500

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            route = _route_template(scope)
            method = scope["method"] if scope["method"] in _METHODS else "other"
            REQUESTS.labels(route, method, str(status)).inc()
            LATENCY.labels(route, method).observe(time.perf_counter() - started)


def _route_template(scope: Scope) -> str:
    """The route the router chose; `unmatched` for an unknown path and for an answer given
    before routing (a body over the size limit)."""
    return getattr(scope.get("route"), "path", None) or _UNMATCHED


async def _allow_scraper(request: Request) -> None:
    """With FT_METRICS_TOKEN, its bearer token from everyone; without, this machine only.
    Never a project's API key: a scraper has none."""
    token = request.app.state.settings.metrics_token
    if token is None:
        client = request.client.host if request.client else None
        if not is_loopback(client):
            raise Forbidden("/metrics answers only clients on the API's own machine; to "
                            "scrape it from elsewhere, set FT_METRICS_TOKEN and send "
                            "'Authorization: Bearer <token>'", code="loopback_only")
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.get_secret_value().encode()):
        raise Unauthorized("/metrics needs the header 'Authorization: Bearer <token>' with "
                           "the token set in FT_METRICS_TOKEN",
                           headers={"WWW-Authenticate": "Bearer"})


router = APIRouter(route_class=SessionRoute, tags=["metrics"])


# Out of the OpenAPI schema: it is for Prometheus, not for the API's clients. Outside /v1, so
# neither API keys nor the rate limiter apply.
@router.get("/metrics", include_in_schema=False, dependencies=[Depends(_allow_scraper)])
def metrics(request: Request, session: SessionDep) -> Response:
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    heartbeat = request.app.state.settings.worker_heartbeat_seconds
    return Response(encode(_scrape_registry(session, heartbeat)), media_type=content_type)


def _scrape_registry(session: Session, heartbeat_seconds: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    if _MULTIPROCESS:
        MultiProcessCollector(registry)
    else:
        # The process's own figures (CPU, memory, open files) mean something with one process.
        for collector in (REQUESTS, LATENCY, PROCESS_COLLECTOR, PLATFORM_COLLECTOR,
                          GC_COLLECTOR):
            registry.register(collector)
    registry.register(JobCollector(session, heartbeat_seconds))
    return registry
