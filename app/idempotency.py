"""Idempotency-Key: a retried create returns the object the first request made.

The key is stored in the same transaction as the object, so a crash cannot leave one without
the other; the same key with a different request is refused.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Header
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import Conflict, InvalidRequest
from app.models import IdempotencyKey

IdempotencyHeader = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
    description="Any unique string; retrying with the same key and body returns the original "
                "object instead of creating another")]


def request_digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def replayed(session: Session, project_id: str, scope: str, key: str | None,
             digest: str) -> str | None:
    """The id the project's first request with `key` created, or None for a new key."""
    if key is None:
        return None
    stored = session.scalars(select(IdempotencyKey).where(
        IdempotencyKey.project_id == project_id, IdempotencyKey.scope == scope,
        IdempotencyKey.key == key)).first()
    if stored is None:
        return None
    if stored.request_sha256 != digest:
        raise InvalidRequest("this Idempotency-Key was already used with a different request; "
                             "use a new key for a new request", code="idempotency_key_reused",
                             param="Idempotency-Key")
    return stored.object_id


def remember(session: Session, project_id: str, scope: str, key: str | None, digest: str,
             object_id: str) -> None:
    if key is None:
        return
    try:
        with session.begin_nested():
            session.add(IdempotencyKey(project_id=project_id, scope=scope, key=key,
                                       request_sha256=digest, object_id=object_id))
    except IntegrityError:
        raise Conflict("another request with this Idempotency-Key is in progress; retry it "
                       "in a moment", code="idempotency_key_in_use",
                       param="Idempotency-Key") from None
