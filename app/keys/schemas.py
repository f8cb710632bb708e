from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from app.keys import PROJECT_NAME_PATTERN
from app.models import ApiKey

ProjectName = Field(pattern=PROJECT_NAME_PATTERN,
                    description="Lower-case letters, digits, '.', '_' and '-'; at most 64")


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str = ProjectName
    # Strict: "yes" or 1 must not grant admin by coercion.
    admin: StrictBool = Field(default=False,
                              description="May act on every project and manage keys")
    name: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00]*$",
                             description="What the key is for")


class KeyOut(BaseModel):
    prefix: str = Field(description="The key's first 12 characters: it names the key")
    project: str
    admin: bool
    name: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_key(cls, key: ApiKey, project: str) -> KeyOut:
        return cls(prefix=key.prefix, project=project, admin=key.admin, name=key.name,
                   created_at=key.created_at, last_used_at=key.last_used_at,
                   revoked_at=key.revoked_at)


class CreatedKey(KeyOut):
    key: str = Field(description="The whole key; shown this once and never again")


class KeyList(BaseModel):
    data: list[KeyOut]
    has_more: bool = False
