from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from app.errors import error_responses

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=error_responses(503))
def readyz(request: Request) -> Health | JSONResponse:
    """The database and the broker are reachable."""
    failures = []
    try:
        with request.app.state.session_factory() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:
        failures.append(f"database: {type(exc).__name__}")
    if not request.app.state.broker.is_reachable():
        failures.append("broker: unreachable")
    if failures:
        return JSONResponse({"error": {"code": "not_ready", "message": "; ".join(failures)}},
                            status_code=503)
    return Health(status="ready")
