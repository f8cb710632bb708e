"""What every section of the job spec shares: strict fields, and lenient reading of a spec
stored by an earlier release (see app/jobs/spec.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, model_validator


class SpecError(ValueError):
    """A spec problem at one field, which the API's error names as `param`."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


# The validation context of `JobSpec.from_stored`: a spec the API accepted earlier.
STORED = "stored"


def reading_stored(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get(STORED))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _ignore_unknown_when_stored(cls, data: Any, info: ValidationInfo) -> Any:
        # A stored spec may name a field that a later release removed: it does nothing now.
        if reading_stored(info) and isinstance(data, dict):
            return {key: value for key, value in data.items() if key in cls.model_fields}
        return data
