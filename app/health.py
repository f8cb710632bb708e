"""Liveness and readiness, answered beside the request load, never behind it.

Both are `async`: a saturated thread pool does not delay them. Readiness checks the database
and the broker at once, each in a thread of the probes' own (with a connection of their own),
each with a deadline, so a load balancer learns within seconds that a dependency is gone.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.errors import error_responses

router = APIRouter(tags=["health"])

CHECK_SECONDS = 3.0


class Health(BaseModel):
    status: str


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up and its event loop answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=error_responses(503))
async def readyz(request: Request) -> Health | JSONResponse:
    """The database and the broker are reachable."""
    state = request.app.state

    def database() -> bool:
        # On the driver's connection, outside a transaction: on SQLite a transaction begins
        # by taking the write lock, which a long write would make the probe wait for.
        connection = state.probe_engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
        finally:
            connection.close()
        return True

    checks = {"database": database, "broker": state.broker.is_reachable}
    problems: dict[str, str | None] = {}

    async def check(name: str) -> None:
        problems[name] = await _problem_of(checks[name], state.probe_limiter)

    async with anyio.create_task_group() as group:
        for name in checks:
            group.start_soon(check, name)
    failures = [f"{name}: {problems[name]}" for name in checks if problems[name]]
    if failures:
        return JSONResponse({"error": {"code": "not_ready", "message": "; ".join(failures)}},
                            status_code=503)
    return Health(status="ready")


async def _problem_of(check: Callable[[], bool], limiter: anyio.CapacityLimiter) -> str | None:
    """None when `check` passes in time; what went wrong otherwise."""
    try:
        with anyio.fail_after(CHECK_SECONDS):
            passed = await to_thread.run_sync(check, abandon_on_cancel=True, limiter=limiter)
    except TimeoutError:
        return f"no answer within {CHECK_SECONDS:.0f} s"
    except Exception as exc:
        return type(exc).__name__
    return None if passed else "unreachable"
