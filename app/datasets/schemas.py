from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ColumnOut(BaseModel):
    name: str
    type: str


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    project_id: str
    name: str
    format: str = Field(description="The stored file's format: SQuAD JSON is stored as JSON "
                                    "Lines, Arrow as Parquet, Alpaca and ShareGPT rewritten as "
                                    "JSON Lines")
    source_format: str = Field(description="The uploaded file's format")
    layout: str = Field(description="What the rows were recognised as: squad, conll, alpaca, "
                                    "sharegpt, openai-chat, prompt-completion, preference or "
                                    "tabular (columns as uploaded)")
    layout_details: dict[str, Any] = Field(
        description="What reading the layout counted, e.g. SQuAD's unanswerable_questions")
    fits: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="The tasks the data fits, each with the dataset fields that a job naming "
                    "none of its task's columns uses")
    filename: str | None
    size_bytes: int
    sha256: str
    num_rows: int
    columns: list[ColumnOut]
    created_at: datetime


class DatasetPreview(BaseModel):
    dataset_id: str
    columns: list[ColumnOut]
    rows: list[dict[str, Any]]
