"""OpenAI's fine-tuning objects and requests, as the official SDK reads and sends them.

Times are Unix seconds. Requests refuse unknown fields, as OpenAI's API does; the values
OpenAI accepts and this service cannot honour (a `dpo` method, integrations) pass the schema
and are refused by the service with a message that says why.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

T = TypeVar("T")

Auto = Literal["auto"]
# A suffix becomes part of the fine_tuned_model name, whose parts ':' separates.
SUFFIX_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
METADATA_VALUE = r"^[^\x00]*$"  # PostgreSQL's text has no NUL
# Metadata keys are read back by JSON path (the list's metadata[key] filter): no quotes,
# backslashes or control characters.
METADATA_KEY = r'[^"\\\x00-\x1f]{1,64}'


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _auto_or(low: float, high: float, *, integer: bool) -> BeforeValidator:
    """'auto', or a number in (integer: from `low`) up to `high`, refused in one sentence
    (a plain union would answer with each of its branches' complaints)."""
    def check(value: Any, info: ValidationInfo) -> Any:
        if value == "auto":
            return value
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and (not integer or float(value).is_integer()) and value <= high and (
                value >= low if integer else value > low):
            return int(value) if integer else float(value)
        wanted = f"an integer from {low:g}" if integer else f"a number above {low:g}"
        raise ValueError(f"{info.field_name} must be 'auto' or {wanted} to {high:g}, not "
                         f"{value!r}")

    return BeforeValidator(check)


class HyperparametersIn(_Request):
    n_epochs: Annotated[int | Auto, _auto_or(1, 1000, integer=True)] = "auto"
    batch_size: Annotated[int | Auto, _auto_or(1, 4096, integer=True)] = "auto"
    learning_rate_multiplier: Annotated[float | Auto, _auto_or(0, 1000, integer=False)] = "auto"


class SupervisedIn(_Request):
    hyperparameters: HyperparametersIn | None = None


class MethodIn(_Request):
    # Any name passes here, so that a method this service lacks gets a message, not an enum.
    type: str
    supervised: SupervisedIn | None = None
    dpo: dict[str, Any] | None = None
    reinforcement: dict[str, Any] | None = None


class FineTuningJobCreate(_Request):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "model": "tiny/gpt2", "training_file": "ds_0123456789abcdef0123456789abcdef",
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": "auto"}}},
        "suffix": "support-bot", "metadata": {"team": "support"}}]})

    model: str = Field(min_length=1, max_length=200)
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(default=None, min_length=1, max_length=64)
    hyperparameters: HyperparametersIn | None = None
    method: MethodIn | None = None
    suffix: str | None = Field(default=None, pattern=SUFFIX_PATTERN)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    metadata: dict[str, Annotated[str, Field(max_length=512, pattern=METADATA_VALUE)]] | None \
        = None
    integrations: list[dict[str, Any]] | None = None

    @field_validator("metadata")
    @classmethod
    def _sixteen_plain_keys(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        if len(value) > 16:
            raise ValueError("metadata holds at most 16 pairs")
        bad = [key for key in value if not re.fullmatch(METADATA_KEY, key)]
        if bad:
            raise ValueError(f"metadata keys are 1 to 64 characters without quotes, "
                             f"backslashes or control characters: {bad[0]!r}")
        return value


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: Literal["fine-tune", "fine-tune-results"]
    status: Literal["processed"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class HyperparametersOut(BaseModel):
    n_epochs: int | float
    batch_size: int
    learning_rate_multiplier: float


class SupervisedOut(BaseModel):
    hyperparameters: HyperparametersOut


class MethodOut(BaseModel):
    type: Literal["supervised"] = "supervised"
    supervised: SupervisedOut


class JobErrorOut(BaseModel):
    code: str
    message: str
    param: str | None = None


class FineTuningJob(BaseModel):
    # Fields that may be null default to it: FastAPI's document drops nulls from examples.
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    finished_at: int | None = None
    estimated_finish: int | None = None
    status: Literal["validating_files", "queued", "running", "succeeded", "failed",
                    "cancelled"]
    error: JobErrorOut | None = None
    model: str
    fine_tuned_model: str | None = None
    organization_id: str
    training_file: str
    validation_file: str | None = None
    result_files: list[str]
    trained_tokens: int | None = None
    hyperparameters: HyperparametersOut
    method: MethodOut
    seed: int
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] = Field(default_factory=list)


class FineTuningJobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any]


class CheckpointMetrics(BaseModel):
    step: int
    train_loss: float | None = None
    valid_loss: float | None = None


class FineTuningJobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: CheckpointMetrics


class ListPage(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None

    @classmethod
    def of(cls, items: list[Any], has_more: bool) -> ListPage[Any]:
        return cls(data=items, has_more=has_more, first_id=items[0].id if items else None,
                   last_id=items[-1].id if items else None)
