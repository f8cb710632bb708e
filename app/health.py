"""Liveness and readiness, answered beside the request load, never behind it.

Both are `async`: a saturated thread pool does not delay them. Readiness checks the database
and the broker in threads of their own, each with a deadline, so a load balancer learns
within seconds that a dependency is gone rather than waiting on it.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

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
        with state.session_factory() as session:
            session.execute(text("SELECT 1"))
        return True

    failures = [f"{name}: {problem}" for name, problem in (
        ("database", await _problem_of(database)),
        ("broker", await _problem_of(state.broker.is_reachable)),
    ) if problem]
    if failures:
        return JSONResponse({"error": {"code": "not_ready", "message": "; ".join(failures)}},
                            status_code=503)
    return Health(status="ready")


async def _problem_of(check: Callable[[], bool]) -> str | None:
    """None when `check` passes in time; what went wrong otherwise."""
    try:
        with anyio.fail_after(CHECK_SECONDS):
            # A limiter of its own: the check must not queue behind the routes' threads.
            passed = await to_thread.run_sync(check, abandon_on_cancel=True,
                                              limiter=anyio.CapacityLimiter(1))
    except TimeoutError:
        return f"no answer within {CHECK_SECONDS:.0f} s"
    except Exception as exc:
        return type(exc).__name__
    return None if passed else "unreachable"
