"""Format detection, CSV/TSV, encodings and empty files."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from app.datasets.formats import (
    FORMATS,
    STORED_FORMATS,
    ColumnInfo,
    DatasetFormatError,
    detect_format,
    inspect_file,
    read_preview,
)
from app.datasets.intake import take_in
from tests.datasets.helpers import error, types, write

# --- detect_format -----------------------------------------------------------------------

@pytest.mark.parametrize(("filename", "expected"), [
    ("train.csv", "csv"), ("TRAIN.CSV", "csv"), ("a.tsv", "tsv"), ("a.jsonl", "jsonl"),
    ("a.NDJSON", "jsonl"), ("a.json", "json"), ("dir/a.b.Parquet", "parquet"),
])
def test_detect_format_by_extension(filename: str, expected: str) -> None:
    assert detect_format(filename, None) == expected


@pytest.mark.parametrize(("declared", "expected"), [
    ("CSV", "csv"), ("tsv", "tsv"), ("ndjson", "jsonl"), ("NDJSON", "jsonl"), (" Json ", "json"),
    ("parquet", "parquet"),
])
def test_detect_format_declared_wins(declared: str, expected: str) -> None:
    assert detect_format("data.csv", declared) == expected


@pytest.mark.parametrize(("filename", "declared"), [
    ("a.txt", None), ("a.tab", None), ("a.xlsx", None), ("a.csv.gz", None), ("noext", None),
    (None, None), ("", None), ("a.csv", "txt"), ("a.csv", "excel"),
])
def test_detect_format_unknown(filename: str | None, declared: str | None) -> None:
    with pytest.raises(DatasetFormatError) as caught:
        detect_format(filename, declared)
    assert caught.value.code == "unsupported_format"
    assert all(fmt in caught.value.message for fmt in FORMATS)


def test_error_attributes() -> None:
    err = DatasetFormatError("boom")
    assert (err.message, err.code, err.line, str(err)) == ("boom", "dataset_unreadable", None,
                                                           "boom")
    assert DatasetFormatError("x", code="c", line=3).line == 3


def test_unknown_format_passed_to_readers(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "a\n1\n")
    assert error(path, "xlsx").code == "unsupported_format"
    with pytest.raises(DatasetFormatError):
        read_preview(path, "xlsx", 5)


# --- CSV / TSV ---------------------------------------------------------------------------

def test_csv_types_and_count(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv",
                 "i,f,b,s,n,mix,num\n"
                 "1,1.5,true,hello,,1,1\n"
                 "-2,2,FALSE,3,,x,2.5\n"
                 ",,,,,true,\n"
                 "+30,1e3,True,,,1,-0.5\n")
    inspection = inspect_file(path, "csv")
    assert inspection.num_rows == 4
    assert types(inspection) == {"i": "integer", "f": "float", "b": "boolean", "s": "string",
                                 "n": "null", "mix": "string", "num": "float"}
    assert inspection.columns[0] == ColumnInfo("i", "integer")


def test_tsv_with_commas_and_quotes_in_values(tmp_path: Path) -> None:
    path = write(tmp_path, "d.tsv", 'text\tlabel\nhello, world\t1\n"tab\tinside"\t0\n')
    inspection = inspect_file(path, "tsv")
    assert (inspection.num_rows, types(inspection)) == (2, {"text": "string", "label": "integer"})
    assert read_preview(path, "tsv", 5) == [{"text": "hello, world", "label": "1"},
                                            {"text": "tab\tinside", "label": "0"}]


def test_csv_underscores_and_unicode_digits_are_text(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "a,b\n1_000,\u0663\n")
    assert types(inspect_file(path, "csv")) == {"a": "string", "b": "string"}


def test_csv_blank_lines_skipped_and_crlf(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "\r\na,b\r\n1,2\r\n\r\n   \r\n3,4\r\n\r\n")
    assert inspect_file(path, "csv").num_rows == 2
    assert read_preview(path, "csv", 10) == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]


def test_csv_bom_is_stripped(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "\ufefftext,label\nhi,1\n".encode())
    assert [column.name for column in inspect_file(path, "csv").columns] == ["text", "label"]


def test_csv_ragged_row_names_physical_line(tmp_path: Path) -> None:
    # A quoted field over two lines and a blank line come before the bad row: line 6.
    path = write(tmp_path, "d.csv", 'text,label\n"two\nlines",1\n\nok,0\nbad,1,extra\n')
    err = error(path, "csv")
    assert err.code == "dataset_ragged_rows"
    assert err.line == 6
    assert "Line 6" in err.message and "3 fields" in err.message and "has 2" in err.message


def test_csv_too_few_fields(tmp_path: Path) -> None:
    err = error(write(tmp_path, "d.csv", "a,b,c\n1,2,3\n4,5\n"), "csv")
    assert (err.code, err.line) == ("dataset_ragged_rows", 3)
    assert "2 fields" in err.message and "has 3" in err.message


def test_csv_unclosed_quote_points_at_its_line(tmp_path: Path) -> None:
    err = error(write(tmp_path, "d.csv", 'text,label\nok,1\n"never closed,1\nx,0\ny,1\n'), "csv")
    assert (err.code, err.line) == ("dataset_ragged_rows", 3)
    assert "quote" in err.message


def test_csv_long_fields(tmp_path: Path) -> None:
    long_text = "word " * 100_000  # 500 kB, above the csv module's default field limit
    path = write(tmp_path, "d.csv", f'text,label\n"{long_text}",1\n')
    assert inspect_file(path, "csv").num_rows == 1
    assert read_preview(path, "csv", 1)[0]["text"] == long_text


@pytest.mark.parametrize(("header", "needle"), [
    ("a,b,a", "'a'"), ("a,,c", "Column 2"), ("a, ,c", "Column 2"),
])
def test_csv_bad_header(tmp_path: Path, header: str, needle: str) -> None:
    err = error(write(tmp_path, "d.csv", f"{header}\n1,2,3\n"), "csv")
    assert (err.code, err.line) == ("dataset_invalid_header", 1)
    assert needle in err.message


@pytest.mark.parametrize("content", ["a,b\n", "a,b", "a,b\n\n\n", "\ufeffa,b\r\n"])
def test_csv_header_only_is_empty(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, "d.csv", content)
    err = error(path, "csv")
    assert err.code == "dataset_empty"
    assert "header" in err.message and "no data rows" in err.message
    assert read_preview(path, "csv", 5) == []


def test_csv_preview_strings_and_nulls(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "text,label,score\nhi,1,\n  ,2,0.5\nthird,3,1\n")
    assert read_preview(path, "csv", 2) == [{"text": "hi", "label": "1", "score": None},
                                            {"text": None, "label": "2", "score": "0.5"}]
    assert read_preview(path, "csv", 0) == []


def test_csv_preview_reads_only_what_it_needs(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "a,b\n1,2\n3,4\nragged\n\xff")
    assert read_preview(path, "csv", 2) == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]
    with pytest.raises(DatasetFormatError) as caught:
        read_preview(path, "csv", 3)
    assert caught.value.code == "dataset_ragged_rows"


def test_csv_too_many_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", ",".join(f"c{i}" for i in range(6)) + "\n" + "1," * 5 + "1\n")
    assert inspect_file(path, "csv", max_columns=6).num_rows == 1
    assert error(path, "csv", max_columns=5).code == "dataset_too_many_columns"


# --- encoding and binary garbage ---------------------------------------------------------

def test_latin1_is_an_encoding_error_with_line_and_offset(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "text,label\ncafe,1\ncaf\u00e9,0\n".encode("latin-1"))
    for fmt in ("csv", "tsv", "jsonl", "json"):
        err = error(path, fmt)
        assert (err.code, err.line) == ("dataset_encoding", 3)
        assert "UTF-8" in err.message and "line 3" in err.message
        assert "byte offset 21" in err.message and "0xE9" in err.message
    with pytest.raises(DatasetFormatError) as caught:
        read_preview(path, "csv", 1)
    assert caught.value.code == "dataset_encoding"


def test_encoding_error_far_into_the_file(tmp_path: Path) -> None:
    # Two-byte characters straddle the locator's chunk boundaries; the bad byte comes later.
    body = "text,label\n" + "\u00e9\u00e9\u00e9,1\n" * 300_000
    data = body.encode() + b"bad\xff,1\n"
    err = error(write(tmp_path, "d.csv", data), "csv")
    assert err.line == 300_002
    assert f"byte offset {len(body.encode()) + 3}" in err.message


def test_truncated_character_at_end(tmp_path: Path) -> None:
    err = error(write(tmp_path, "d.csv", b"a\nx\n" + "\u00e9".encode()[:1]), "csv")
    assert (err.code, err.line) == ("dataset_encoding", 3)
    assert "byte offset 4" in err.message


@pytest.mark.parametrize("fmt", STORED_FORMATS)
def test_random_bytes_give_a_clear_error(tmp_path: Path, fmt: str) -> None:
    data = random.Random(7).randbytes(200_000)
    err = error(write(tmp_path, "junk", data), fmt)
    assert err.code in ("dataset_encoding", "dataset_unreadable")
    with pytest.raises(DatasetFormatError):
        read_preview(tmp_path / "junk", fmt, 5)


@pytest.mark.parametrize("fmt", FORMATS)
def test_random_bytes_are_refused_at_intake_and_leave_nothing(tmp_path: Path, fmt: str) -> None:
    upload = write(tmp_path, "junk", random.Random(7).randbytes(200_000))
    with pytest.raises(DatasetFormatError) as caught:
        take_in(upload, "junk", fmt, None, max_bytes=10**7)
    assert caught.value.code in ("dataset_encoding", "dataset_unreadable",
                                 "dataset_invalid_arrow")
    assert [path.name for path in tmp_path.iterdir()] == ["junk"]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "json"])
def test_nul_bytes_are_unreadable(tmp_path: Path, fmt: str) -> None:
    err = error(write(tmp_path, "junk", b"\n\x00\x00\x00\x00\n"), fmt)
    assert (err.code, err.line) == ("dataset_unreadable", 2)
    assert "binary" in err.message


# --- empty files -------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", STORED_FORMATS)
def test_zero_bytes_is_empty(tmp_path: Path, fmt: str) -> None:
    path = write(tmp_path, "empty", b"")
    assert error(path, fmt).code == "dataset_empty"
    with pytest.raises(DatasetFormatError) as caught:
        read_preview(path, fmt, 5)
    assert caught.value.code == "dataset_empty"


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "json"])
@pytest.mark.parametrize("content", [" \n\n\t\r\n  ", "\ufeff\n"])
def test_whitespace_only_is_empty(tmp_path: Path, fmt: str, content: str) -> None:
    assert error(write(tmp_path, "blank", content), fmt).code == "dataset_empty"


