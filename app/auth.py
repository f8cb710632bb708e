"""Who is calling: the bearer API key of every /v1 request, resolved to its project.

A key's project bounds what it sees: services filter every query by `Caller.project_id`
(admins see all projects), so another project's object is indistinguishable from one that
does not exist. Authentication runs in its own short transaction: an upload that streams for
minutes must not hold the database (SQLite's write lock) for the whole time.

Looking a key up costs a connection, a transaction and a query: under load, more than the
read it guards. So a process remembers the keys it found live for `KEY_CACHE_SECONDS`:
authentication then runs on the event loop with no thread and no database. Revoking a key
through an API process forgets it there at once; the other processes (and `finetune keys
revoke`, which writes the database directly) stop accepting it within that second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

from anyio import to_thread
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Select
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.errors import Forbidden, Unauthorized
from app.keys import service as keys
from app.keys import tokens
from app.models import DEFAULT_PROJECT_ID
from app.network import is_loopback

KEY_CACHE_SECONDS = 1.0
# Live keys of one second are few; a bound keeps a flood of distinct keys from growing it.
_KEY_CACHE_ENTRIES = 10_000

_bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey",
                     description="An API key of a project: `Authorization: Bearer ftk_...`")


@dataclass(frozen=True)
class Caller:
    project_id: str
    admin: bool
    key_id: str | None = None
    # Names the caller to the rate limiter: the key's id, or the client's address when
    # authentication is off.
    identity: str = ""

    def sees(self, project_id: str) -> bool:
        return self.admin or project_id == self.project_id

    def visible(self, statement: Select[Any], model: Any) -> Select[Any]:
        """`statement` restricted to the rows of the caller's project (admins: all)."""
        return statement if self.admin else statement.where(model.project_id == self.project_id)


class KnownKeys:
    """The callers of the keys this process found live in the last `KEY_CACHE_SECONDS`, by
    the sha256 of the key (as stored)."""

    def __init__(self, seconds: float = KEY_CACHE_SECONDS) -> None:
        self._seconds = seconds
        self._callers: dict[str, tuple[float, Caller]] = {}

    def get(self, digest: str) -> Caller | None:
        found = self._callers.get(digest)
        if found is None or time.monotonic() - found[0] > self._seconds:
            return None
        return found[1]

    def remember(self, digest: str, caller: Caller) -> None:
        if len(self._callers) >= _KEY_CACHE_ENTRIES:
            self._callers.clear()
        self._callers[digest] = (time.monotonic(), caller)

    def forget(self, digest: str) -> None:
        self._callers.pop(digest, None)


async def authenticate(request: Request, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Caller:
    settings = request.app.state.settings
    if not settings.require_api_keys:
        client = request.client.host if request.client else None
        if not is_loopback(client):
            raise Forbidden("authentication is off on this server, so it only answers "
                            "requests from its own machine", code="loopback_only")
        caller = Caller(project_id=DEFAULT_PROJECT_ID, admin=True, identity=f"ip:{client}")
    else:
        caller = await _caller_for(request, credentials)
    await request.app.state.rate_limiter.check(caller.identity)
    return caller


async def _caller_for(request: Request,
                      credentials: HTTPAuthorizationCredentials | None) -> Caller:
    if credentials is None or not credentials.credentials:
        raise Unauthorized("this request needs an API key: send the header "
                           "'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"})
    secret = credentials.credentials
    digest = tokens.digest(secret)
    known: KnownKeys = request.app.state.known_keys
    caller = known.get(digest)
    if caller is None:
        caller = await to_thread.run_sync(_look_up, request.app.state.session_factory, secret)
        known.remember(digest, caller)
    return caller


def _look_up(session_factory: sessionmaker[Session], secret: str) -> Caller:
    invalid = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    with transaction(session_factory) as session:
        key = keys.authenticate(session, secret)
    if key is None:
        raise Unauthorized("the API key is not valid: check that it was copied whole",
                           code="invalid_api_key", headers=invalid)
    if key.revoked_at is not None:
        raise Unauthorized(f"the API key {key.prefix} was revoked; ask an admin for a new one",
                           code="api_key_revoked", headers=invalid)
    return Caller(project_id=key.project_id, admin=key.admin, key_id=key.id,
                  identity=f"key:{key.id}")


async def require_admin(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
    if not caller.admin:
        raise Forbidden("only an admin key can manage API keys", code="admin_required")
    return caller


CallerDep = Annotated[Caller, Depends(authenticate)]
AdminDep = Annotated[Caller, Depends(require_admin)]
