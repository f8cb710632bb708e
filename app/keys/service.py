"""Projects and API keys: create, authenticate, list, revoke."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.keys import tokens
from app.models import ApiKey, Project, utcnow

# A key's last use is written at most this often, so that reads stay reads.
_LAST_USED_RESOLUTION = timedelta(seconds=60)


def ensure_project(session: Session, name: str) -> Project:
    project = session.scalars(select(Project).where(Project.name == name)).first()
    if project is None:
        project = Project(name=name)
        session.add(project)
        session.flush()
    return project


def create_key(session: Session, project_name: str, *, admin: bool = False,
               name: str | None = None) -> tuple[ApiKey, str]:
    """A new key of `project_name` (made if new); the secret is returned here and never again."""
    project = ensure_project(session, project_name)
    secret = tokens.new_key()
    key = ApiKey(prefix=tokens.prefix_of(secret), secret_sha256=tokens.digest(secret),
                 project_id=project.id, admin=admin, name=name)
    session.add(key)
    session.flush()
    return key, secret


def authenticate(session: Session, secret: str) -> ApiKey | None:
    """The live key `secret` stands for, or None; a match also records the key's use."""
    if not tokens.KEY_PATTERN.match(secret):
        return None
    key = session.scalars(select(ApiKey).where(ApiKey.prefix == tokens.prefix_of(secret))).first()
    if key is None or not tokens.matches(secret, key.secret_sha256):
        return None
    now = utcnow()
    if key.revoked_at is None and (key.last_used_at is None
                                   or now - key.last_used_at > _LAST_USED_RESOLUTION):
        session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now)
                        .execution_options(synchronize_session=False))
        key.last_used_at = now
    return key


def list_keys(session: Session, project_name: str | None = None) -> list[tuple[ApiKey, str]]:
    """Keys with their project's name, oldest first."""
    statement = select(ApiKey, Project.name).join(Project, Project.id == ApiKey.project_id)
    if project_name is not None:
        statement = statement.where(Project.name == project_name)
    rows = session.execute(statement.order_by(ApiKey.created_at, ApiKey.prefix))
    return [(key, name) for key, name in rows]


def revoke(session: Session, prefix: str) -> tuple[ApiKey, str]:
    """Revoke the key named by `prefix`; revoking it again changes nothing."""
    row = session.execute(select(ApiKey, Project.name)
                          .join(Project, Project.id == ApiKey.project_id)
                          .where(ApiKey.prefix == prefix)).first()
    if row is None:
        raise NotFound(f"no API key with prefix {prefix}", param="prefix")
    key, project_name = row
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key, project_name
