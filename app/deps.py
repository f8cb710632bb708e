"""Request dependencies as Annotated aliases: one session that commits, the settings, the store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import transaction
from app.storage import LocalStorage


def get_session(request: Request) -> Iterator[Session]:
    """Commit when the route succeeds, roll back otherwise.

    The dependency ends before the response is sent (scope="function"), so a failed commit
    or a failed after-commit action (sending the job to the broker) becomes the response.
    """
    with transaction(request.app.state.session_factory) as session:
        yield session


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_storage(request: Request) -> LocalStorage:
    return request.app.state.storage


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StorageDep = Annotated[LocalStorage, Depends(get_storage)]
