"""What inspecting an uploaded file yields: its rows and typed columns, or a DatasetFormatError
that tells the user what to fix; shared by every format's reader."""

from __future__ import annotations

import datetime
import decimal
import math
from dataclasses import dataclass
from typing import Any


class DatasetFormatError(Exception):
    """A dataset file the user has to fix; `line` is the 1-based physical line when known."""

    def __init__(self, message: str, *, code: str = "dataset_unreadable",
                 line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.line = line


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str  # string, integer, float, boolean, list, object, null (all values null), mixed


@dataclass(frozen=True)
class Inspection:
    num_rows: int
    columns: list[ColumnInfo]


def jsonable(value: Any) -> Any:
    """`value` as strict JSON can hold it: no NaN, dates as text, decimals as floats."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, decimal.Decimal):
        value = float(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def empty_file(message: str) -> DatasetFormatError:
    return DatasetFormatError(message, code="dataset_empty")


def too_many_columns(found: str, max_columns: int) -> DatasetFormatError:
    return DatasetFormatError(f"The file has {found} columns; at most {max_columns} are "
                              "supported.", code="dataset_too_many_columns")
