from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from app.auth import AdminDep, KnownKeys
from app.db import after_commit
from app.deps import SessionDep, SessionRoute
from app.errors import error_responses
from app.keys import PROJECT_NAME_PATTERN, service
from app.keys.schemas import CreatedKey, KeyCreate, KeyList, KeyOut

router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=SessionRoute)

PrefixPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_]{1,16}$",
                                 description="The key's prefix, as `GET /v1/keys` shows it")]


@router.post("", status_code=201, response_model=CreatedKey,
             responses=error_responses(400, 409, 413, 422))
def create_key(body: KeyCreate, _: AdminDep, session: SessionDep) -> CreatedKey:
    """Create a key of a project (the project is made if new); the key is shown only here."""
    key, secret = service.create_key(session, body.project, admin=body.admin, name=body.name)
    return CreatedKey(**KeyOut.from_key(key, body.project).model_dump(), key=secret)


@router.get("", response_model=KeyList, responses=error_responses(422))
def list_keys(_: AdminDep, session: SessionDep,
              project: Annotated[str | None, Query(pattern=PROJECT_NAME_PATTERN,
                                                   description="Only this project's keys")] = None,
              ) -> KeyList:
    """Every key, oldest first: prefix, project, created, last used, revoked."""
    return KeyList(data=[KeyOut.from_key(key, name)
                         for key, name in service.list_keys(session, project)])


@router.delete("/{prefix}", response_model=KeyOut, responses=error_responses(404, 422))
def revoke_key(prefix: PrefixPath, request: Request, _: AdminDep,
               session: SessionDep) -> KeyOut:
    """Revoke a key: it is refused from the next request on (by other API processes, within
    a second). Revoking twice changes nothing."""
    key, project_name = service.revoke(session, prefix)
    known_keys: KnownKeys = request.app.state.known_keys
    after_commit(session, lambda: known_keys.forget(key.secret_sha256))
    return KeyOut.from_key(key, project_name)
