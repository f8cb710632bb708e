"""Helpers for the dataset-format tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.datasets.formats import (
    DatasetFormatError,
    Inspection,
    inspect_file,
)


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    else:
        path.write_bytes(content)
    return path


def types(inspection: Inspection) -> dict[str, str]:
    return {column.name: column.type for column in inspection.columns}


def error(path: Path, fmt: str, **kwargs: int) -> DatasetFormatError:
    with pytest.raises(DatasetFormatError) as caught:
        inspect_file(path, fmt, **kwargs)
    return caught.value


def write_jsonl(tmp_path: Path, rows: list[object], name: str = "d.jsonl") -> Path:
    return write(tmp_path, name, "".join(json.dumps(row) + "\n" for row in rows))


