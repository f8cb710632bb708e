"""Path and query parameters shared by the routers: ids have one shape everywhere.

The shape keeps what no id can hold (NUL, slashes, kilobytes) out of the database, where
PostgreSQL would refuse it with an error instead of finding nothing.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Path, Request
from fastapi.dependencies.models import Dependant

from app.errors import InvalidRequest

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

JobId = Annotated[str, Path(pattern=ID_PATTERN, description="A job's id (`job_…`)")]
DatasetId = Annotated[str, Path(pattern=ID_PATTERN, description="A dataset's id (`ds_…`)")]
DryRunId = Annotated[str, Path(pattern=ID_PATTERN, description="A dry run's id (`dry_…`)")]


def is_id(value: str) -> bool:
    return re.fullmatch(ID_PATTERN, value) is not None


async def reject_unknown_query_parameters(request: Request) -> None:
    """A misspelt filter (`?stauts=running`) must not silently list everything: 422 instead."""
    # async: it only reads the request, and must not take a thread from the routes.
    known = _query_names(request.scope["route"].dependant)
    for name in request.query_params:
        if name not in known:
            raise InvalidRequest(f"unknown query parameter '{name}'", code="unknown_field",
                                 param=name)


def _query_names(dependant: Dependant) -> set[str]:
    names = {parameter.alias for parameter in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return names
