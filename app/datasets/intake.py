"""Taking in an upload: tell its format and layout, check every record, and convert what the
tasks cannot read as uploaded, so that the stored file is one the worker reads as it is.

- SQuAD JSON becomes JSON Lines of one question per row; Hugging Face Arrow files and
  `save_to_disk` archives become Parquet.
- Alpaca and ShareGPT records are rewritten into the columns the tasks read (prompt/completion,
  messages) as JSON Lines; chats and preference pairs are checked record by record.
- Everything else is stored as uploaded.

Each pass streams, but for JSON documents, which the format parses whole within its size cap.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.datasets.arrow_files import arrow_to_parquet
from app.datasets.formats import (
    detect_format,
    inspect_file,
    read_json_document,
    read_rows,
)
from app.datasets.inspection import DatasetFormatError, Inspection
from app.datasets.layouts import RecordReader, recognise, record_reader
from app.datasets.squad import is_squad_document, squad_rows


@dataclass(frozen=True)
class Intake:
    path: Path  # the file to store: the upload itself or its conversion
    format: str  # the stored file's format
    source_format: str  # the upload's
    layout: str
    inspection: Inspection
    # What the layout's reading counted, e.g. SQuAD's unanswerable questions.
    details: dict[str, Any] = field(default_factory=dict)


def take_in(upload: Path, filename: str | None, declared_format: str | None,
            declared_layout: str | None, *, max_bytes: int) -> Intake:
    """The upload as it will be stored; a refused upload leaves no converted file behind."""
    try:
        return _take_in(upload, filename, declared_format, declared_layout, max_bytes)
    except BaseException:
        for path in upload.parent.glob(_converted(upload, "*").name):
            path.unlink(missing_ok=True)
        raise


def _converted(upload: Path, fmt: str) -> Path:
    return upload.with_name(f"{upload.name}.converted.{fmt}")


def _take_in(upload: Path, filename: str | None, declared_format: str | None,
             declared_layout: str | None, max_bytes: int) -> Intake:
    source = detect_format(filename, declared_format)
    if source in ("json", "squad"):
        document = read_json_document(upload)
        if source == "squad" or is_squad_document(document):
            if source == "squad" and not is_squad_document(document):
                raise DatasetFormatError(
                    'A SQuAD file is an object whose "data" holds articles with '
                    '"paragraphs"; this JSON is not one.', code="dataset_invalid_squad")
            return _squad(document, _converted(upload, "jsonl"))
    if source == "arrow":
        target = _converted(upload, "parquet")
        arrow_to_parquet(upload, _archive_kind(upload), target, max_bytes=max_bytes)
        path, fmt = target, "parquet"
    else:
        path, fmt = upload, source
    inspection = inspect_file(path, fmt)
    if fmt == "conll":
        return Intake(path, fmt, source, "conll", inspection)
    layout = recognise([column.name for column in inspection.columns], declared_layout)
    reader = record_reader(layout)
    if reader is None:
        return Intake(path, fmt, source, layout.name, inspection)
    rewritten = _rewrite(reader, read_rows(path, fmt), _converted(upload, "jsonl"))
    return Intake(rewritten, "jsonl", source, layout.name, inspect_file(rewritten, "jsonl"))


def _squad(document: dict[str, Any], target: Path) -> Intake:
    questions = unanswerable = 0
    with target.open("w", encoding="utf-8") as out:
        for row in squad_rows(document):
            questions += 1
            unanswerable += not row["answers"]["text"]
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    if questions == 0:
        raise DatasetFormatError("The SQuAD file holds no question.", code="dataset_empty")
    return Intake(target, "jsonl", "squad", "squad", inspect_file(target, "jsonl"),
                  {"questions": questions, "unanswerable_questions": unanswerable})


def _rewrite(reader: RecordReader, rows: Iterable[dict[str, Any]], target: Path) -> Path:
    with target.open("w", encoding="utf-8") as out:
        for number, row in enumerate(rows, 1):
            out.write(json.dumps(reader(row, f"record {number}"), ensure_ascii=False) + "\n")
    return target


def _archive_kind(path: Path) -> str:
    # By content, not name: the format may be declared for a file named anything.
    with path.open("rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x1f\x8b") or head[257:262] == b"ustar":
        return "tar"
    return "arrow"
