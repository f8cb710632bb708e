"""Cursor pagination, newest first: `limit` and `after` (the id of the last item seen)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from app.errors import InvalidRequest
from app.params import ID_PATTERN

if TYPE_CHECKING:
    from app.auth import Caller

T = TypeVar("T")

LimitQuery = Annotated[int, Query(ge=1, le=100, description="Items per page")]
AfterQuery = Annotated[str | None, Query(pattern=ID_PATTERN,
                                         description="Id of the last item of the previous page")]


class Page(BaseModel, Generic[T]):
    data: list[T]
    has_more: bool


def paginate(session: Session, caller: Caller, statement: Select[Any], model: Any, limit: int,
             after: str | None) -> tuple[list[Any], bool]:
    """A page of the caller's rows of `statement`; `after` must be one of them too."""
    statement = caller.visible(statement, model)
    if after is not None:
        anchor = session.execute(caller.visible(
            select(model.created_at, model.id).where(model.id == after), model)).first()
        if anchor is None:
            raise InvalidRequest(f"'after' names no item of this list: {after}", param="after")
        statement = statement.where(or_(
            model.created_at < anchor.created_at,
            and_(model.created_at == anchor.created_at, model.id < anchor.id)))
    statement = statement.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
    rows = list(session.scalars(statement))
    return rows[:limit], len(rows) > limit
