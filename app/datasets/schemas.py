from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class ColumnOut(BaseModel):
    name: str
    type: str


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    project_id: str
    name: str
    format: str
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
