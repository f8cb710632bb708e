"""Dataset files on disk: tell their format, inspect them and preview their first rows.

Uploads can be gigabytes, so readers stream: CSV, TSV and JSON Lines line by line, Parquet
from its footer and one batch at a time; only a JSON array is parsed whole, hence its size cap.
Inference keeps the set of value kinds seen per column, never the values: memory stays flat.

Every problem a user can fix raises DatasetFormatError with one of these codes:
unsupported_format, dataset_empty, dataset_encoding, dataset_unreadable,
dataset_invalid_header, dataset_ragged_rows, dataset_invalid_json, dataset_invalid_conll,
dataset_too_many_columns, dataset_too_large.

Standard library and pyarrow only: the API process must not pull in pandas or torch.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from itertools import islice
from pathlib import Path, PurePath
from typing import Any

from app.datasets.arrow_files import ARROW_SUFFIXES
from app.datasets.conll import COLUMNS as CONLL_COLUMNS
from app.datasets.conll import ConllError, conll_sentences
from app.datasets.inspection import (
    ColumnInfo,
    DatasetFormatError,
    Inspection,
    empty_file,
    too_many_columns,
)
from app.datasets.parquet import inspect_parquet, parquet_rows

# What an upload may be; SQuAD and Arrow uploads are stored converted (app/datasets/intake.py),
# so the files read back are always of one of the first six.
FORMATS = ("csv", "tsv", "jsonl", "json", "parquet", "conll", "squad", "arrow")
STORED_FORMATS = FORMATS[:6]

_ALIASES = {"ndjson": "jsonl"}
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
               ".json": "json", ".parquet": "parquet", ".conll": "conll",
               **dict.fromkeys(ARROW_SUFFIXES, "arrow")}
_NAMES = {"csv": "CSV", "tsv": "TSV", "jsonl": "JSON Lines", "json": "JSON", "parquet": "Parquet",
          "conll": "CoNLL"}
_DELIMITERS = {"csv": ",", "tsv": "\t"}

# A JSON array has to be parsed whole, and Python objects take several times the file's size.
_JSON_MAX_BYTES = 256 * 1024**2
# The default of 128 KiB rejects ordinary long documents; the cap still bounds one field's
# memory when an unclosed quote swallows the rest of a file.
_MAX_FIELD_CHARS = 64 * 1024**2
csv.field_size_limit(max(csv.field_size_limit(), _MAX_FIELD_CHARS))

# What int() and float() accept, less the '1_000' and non-ASCII digits no CSV writer emits.
_INTEGER = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(nan|inf|infinity)",
                    re.IGNORECASE)
_JSON_KINDS = {bool: "boolean", int: "integer", float: "float", str: "string", list: "list",
               dict: "object"}
_JSON_TYPE_NAMES = {bool: "boolean", int: "number", float: "number", str: "string",
                    list: "array", dict: "object", type(None): "null"}


def detect_format(filename: str | None, declared: str | None) -> str:
    """The format `declared` names if given (case-insensitive, 'ndjson' = 'jsonl'), else the
    one the file name's extension names."""
    if declared:
        name = declared.strip().lower()
        fmt = _ALIASES.get(name, name)
        if fmt in FORMATS:
            return fmt
        raise _unsupported(f"Unsupported dataset format {declared!r}.")
    name = PurePath(filename or "").name.lower()
    fmt = next((fmt for suffix, fmt in _EXTENSIONS.items() if name.endswith(suffix)), None)
    if fmt is None:
        shown = repr(filename) if filename else "the upload (it has no file name)"
        raise _unsupported(f"Cannot tell the dataset format of {shown} from its extension; "
                           f"name it {', '.join(_EXTENSIONS)} or declare the format.")
    return fmt


def inspect_file(path: Path, fmt: str, *, max_columns: int = 1000) -> Inspection:
    """Row count and column types of a whole file, read in one streaming pass.

    CSV/TSV columns are typed from their text: integer, float or boolean (true/false) when
    every non-empty value reads as one (integers with floats make float), else string.
    JSON columns are the union of the rows' keys in first-seen order, typed from the values;
    kinds that do not combine make "mixed". Nulls (JSON NaN and Infinity read as null), empty
    CSV cells and missing keys never change a type; a column with nothing else is "null".
    Parquet types come from the schema in its footer.
    """
    with _reading(path, fmt):
        if fmt == "parquet":
            return inspect_parquet(path, max_columns)
        if fmt in _DELIMITERS:
            return _inspect_csv(path, fmt, max_columns)
        if fmt == "conll":
            rows = sum(1 for _ in _conll_rows(path))
            if rows == 0:
                raise empty_file("The CoNLL file holds no sentence.")
            return Inspection(rows, [ColumnInfo(name, "list") for name in CONLL_COLUMNS])
        return _inspect_objects(_json_rows(path, fmt), fmt, max_columns)


def read_preview(path: Path, fmt: str, limit: int) -> list[dict[str, Any]]:
    """The first `limit` rows as JSON-ready dicts, reading no further than they need.

    CSV/TSV values stay strings, with None for empty cells: their column types come from the
    whole file, which a preview does not read. JSON rows come back as written (keys may differ
    from row to row). Parquet dates, times, timestamps and durations become text, decimals
    floats, bytes text. NaN and infinities become None so that rows serialize as strict JSON.
    A header-only CSV or an empty JSON array gives []; unreadable files raise as in inspect_file.
    """
    return list(islice(read_rows(path, fmt), limit))


def read_rows(path: Path, fmt: str) -> Iterator[dict[str, Any]]:
    """Every row as a dict, streamed, in the preview's terms."""
    with _reading(path, fmt):
        if fmt == "parquet":
            yield from parquet_rows(path)
        elif fmt in _DELIMITERS:
            with closing(_csv_rows(path, fmt, max_columns=None)) as rows:
                header = next(rows)
                for fields in rows:
                    yield {name: value if value.strip() else None
                           for name, value in zip(header, fields)}
        elif fmt == "conll":
            yield from _conll_rows(path)
        else:
            yield from _json_rows(path, fmt)


@contextmanager
def _reading(path: Path, fmt: str) -> Iterator[None]:
    if fmt not in STORED_FORMATS:
        raise _unsupported(f"Unsupported dataset format {fmt!r}.")
    if path.stat().st_size == 0:
        raise empty_file("The file is empty.")
    try:
        yield
    except UnicodeDecodeError:
        raise _encoding_error(path) from None


def _inspect_csv(path: Path, fmt: str, max_columns: int) -> Inspection:
    with closing(_csv_rows(path, fmt, max_columns)) as rows:
        header = next(rows)
        kinds: list[set[str]] = [set() for _ in header]
        count = 0
        for count, fields in enumerate(rows, 1):
            for seen, value in zip(kinds, fields):
                if "string" not in seen:  # once text, always text: skip the parsing
                    kind = _csv_kind(value)
                    if kind:
                        seen.add(kind)
    if count == 0:
        raise empty_file("The file has a header row but no data rows.")
    return Inspection(count, [ColumnInfo(name, _resolve(seen, "string"))
                              for name, seen in zip(header, kinds)])


def _csv_rows(path: Path, fmt: str, max_columns: int | None) -> Iterator[list[str]]:
    """Yields the checked header, then the fields of each data row; blank lines are skipped."""
    delimiter, header = _DELIMITERS[fmt], None
    reader = csv.reader(_text_lines(path, fmt), delimiter=delimiter)
    end = 0
    try:
        for fields in reader:
            start, end = end + 1, reader.line_num
            if not delimiter.join(fields).strip():  # a tab-only TSV line is blank too
                continue
            if header is None:
                header = _checked_header(fields, start, max_columns)
                yield header
            elif len(fields) != len(header):
                raise _ragged(start, end, len(header), len(fields))
            else:
                yield fields
    except csv.Error as err:
        raise DatasetFormatError(f"Line {end + 1} cannot be read as {_NAMES[fmt]}: {err}. A "
                                 "double quote that is never closed is the usual cause.",
                                 line=end + 1) from None
    if header is None:
        raise empty_file("The file is empty.")


def _checked_header(names: list[str], line: int, max_columns: int | None) -> list[str]:
    if max_columns is not None and len(names) > max_columns:
        raise too_many_columns(str(len(names)), max_columns)
    seen: dict[str, int] = {}
    for number, name in enumerate(names, 1):
        if not name.strip():
            raise DatasetFormatError(
                f"Column {number} of the header (line {line}) has no name; every column "
                "needs a unique, non-empty name.", code="dataset_invalid_header", line=line)
        if name in seen:
            raise DatasetFormatError(
                f"The header (line {line}) names column {name!r} twice (columns "
                f"{seen[name]} and {number}); column names must be unique.",
                code="dataset_invalid_header", line=line)
        seen[name] = number
    return names


def _ragged(start: int, end: int, expected: int, found: int) -> DatasetFormatError:
    hint = (f"Its row runs on to line {end}, so a double quote there is probably never closed."
            if end > start else "Check the delimiters and the quoting of values holding them.")
    return DatasetFormatError(f"Line {start} has {found} fields but the header has {expected}. "
                              f"{hint}", code="dataset_ragged_rows", line=start)


def _csv_kind(value: str) -> str | None:
    text = value.strip()
    if not text:
        return None
    if _INTEGER.fullmatch(text):
        return "integer"
    if _FLOAT.fullmatch(text):
        return "float"
    return "boolean" if text.lower() in ("true", "false") else "string"


def _json_rows(path: Path, fmt: str) -> Iterator[dict[str, Any]]:
    if fmt == "json":
        for number, item in enumerate(_json_array(path), 1):
            yield _object(item, f"Item {number} of the array", None)
        return
    for number, line in enumerate(_text_lines(path, fmt), 1):
        if line.strip():
            yield _object(_loads(line, number - 1), f"Line {number}", number)


def read_json_document(path: Path) -> Any:
    """A JSON file parsed whole, within the size a whole parse may take."""
    with _reading(path, "json"):
        return _parsed_whole(path)


def _parsed_whole(path: Path) -> Any:
    if path.stat().st_size > _JSON_MAX_BYTES:
        raise DatasetFormatError(f"A JSON file is read whole, so it may be at most "
                                 f"{_JSON_MAX_BYTES // 1024**2} MiB; this file is larger. Convert "
                                 "it to JSON Lines (.jsonl, one object per line), which has no "
                                 "size limit.", code="dataset_too_large")
    with path.open(encoding="utf-8-sig") as f:
        text = f.read()
    if "\x00" in text:
        raise _binary(text.count("\n", 0, text.index("\x00")) + 1, "json")
    if not text.strip():
        raise empty_file("The file is empty.")
    return _loads(text, 0, extra_data_hint=" If the file has one object per line, it is "
                  "JSON Lines: name it .jsonl or declare the format 'jsonl'.")


def _json_array(path: Path) -> list[Any]:
    data = _parsed_whole(path)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        what = ("an object without a \"data\" array" if isinstance(data, dict)
                else f"a JSON {_JSON_TYPE_NAMES[type(data)]}")
        raise DatasetFormatError(
            f"A JSON dataset must be an array of objects, [{{...}}, ...], or an object whose "
            f"\"data\" key holds one; this file is {what}.", code="dataset_invalid_json")
    return data


def _loads(text: str, lines_before: int, extra_data_hint: str = "") -> Any:
    try:
        # NaN and Infinity are not JSON, though Python writes them: read them as missing values.
        return json.loads(text, parse_constant=lambda _: None)
    except json.JSONDecodeError as err:
        line = lines_before + err.lineno
        hint = extra_data_hint if err.msg == "Extra data" else ""
        raise DatasetFormatError(f"Invalid JSON at line {line}, column {err.colno}: "
                                 f"{err.msg}.{hint}", code="dataset_invalid_json",
                                 line=line) from None
    except RecursionError:
        raise DatasetFormatError(f"The JSON at line {lines_before + 1} is nested too deeply.",
                                 code="dataset_invalid_json", line=lines_before + 1) from None
    except ValueError as err:  # e.g. an integer longer than Python converts
        raise DatasetFormatError(f"Invalid JSON near line {lines_before + 1}: {err}.",
                                 code="dataset_invalid_json", line=lines_before + 1) from None


def _object(value: Any, where: str, line: int | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DatasetFormatError(
            f"{where} is a JSON {_JSON_TYPE_NAMES[type(value)]}, not an object; each row must "
            'be one object such as {"text": "...", "label": 0}.',
            code="dataset_invalid_json", line=line)
    return value


def _inspect_objects(rows: Iterable[dict[str, Any]], fmt: str, max_columns: int) -> Inspection:
    kinds: dict[str, set[str]] = {}
    count = 0
    for count, row in enumerate(rows, 1):
        for key, value in row.items():
            seen = kinds.get(key)
            if seen is None:
                if len(kinds) >= max_columns:
                    raise too_many_columns(f"more than {max_columns} (row {count} adds {key!r})",
                                    max_columns)
                seen = kinds[key] = set()
            kind = _JSON_KINDS.get(type(value))
            if kind:
                seen.add(kind)
    if count == 0:
        raise empty_file(f"The {_NAMES[fmt]} file has no rows.")
    return Inspection(count, [ColumnInfo(key, _resolve(seen, "mixed"))
                              for key, seen in kinds.items()])


def _conll_rows(path: Path) -> Iterator[dict[str, list[str]]]:
    try:
        yield from conll_sentences(_text_lines(path, "conll"))
    except ConllError as error:
        raise DatasetFormatError(str(error), code="dataset_invalid_conll",
                                 line=error.line) from None


def _text_lines(path: Path, fmt: str) -> Iterator[str]:
    # utf-8-sig drops the BOM that Excel and Notepad write; newline="" lets csv see the
    # line endings inside quoted fields.
    with path.open("r", encoding="utf-8-sig", newline="") as f:
        for number, line in enumerate(f, 1):
            if "\x00" in line:  # valid UTF-8, but no text format holds NUL: a binary file
                raise _binary(number, fmt)
            yield line


def _resolve(kinds: set[str], mixed: str) -> str:
    if not kinds:
        return "null"
    if kinds == {"integer", "float"}:
        return "float"
    return next(iter(kinds)) if len(kinds) == 1 else mixed


def _encoding_error(path: Path) -> DatasetFormatError:
    """Finds the first byte that is not UTF-8: the text layer decodes ahead in blocks, so its
    own error cannot say where. No UTF-8 sequence holds a newline byte, so lines decode alone."""
    advice = 'Re-save it as UTF-8 (in Excel: "CSV UTF-8") and upload it again.'
    offset = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                return DatasetFormatError(
                    f"The file is not UTF-8 text: byte 0x{raw[err.start]:02X} at line {number} "
                    f"(byte offset {offset + err.start}) is not valid UTF-8. {advice}",
                    code="dataset_encoding", line=number)
            offset += len(raw)
    return DatasetFormatError(f"The file is not UTF-8 text. {advice}", code="dataset_encoding")


def _binary(line: int, fmt: str) -> DatasetFormatError:
    return DatasetFormatError(f"Line {line} contains a NUL byte: this looks like a binary file, "
                              f"not {_NAMES[fmt]} text.", line=line)


def _unsupported(message: str) -> DatasetFormatError:
    return DatasetFormatError(f"{message} Supported formats: {', '.join(FORMATS)} "
                              "('ndjson' is accepted for jsonl).", code="unsupported_format")
