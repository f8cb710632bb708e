"""JSON Lines, JSON, Parquet, and the memory and import budget."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tracemalloc
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.datasets import formats
from app.datasets.formats import (
    DatasetFormatError,
    inspect_file,
    read_preview,
)
from tests.datasets.helpers import error, types, write, write_jsonl

# --- JSON Lines --------------------------------------------------------------------------

def test_jsonl_types_and_key_union(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path, [
        {"text": "a", "label": 1, "flag": True, "score": 1, "tags": ["x"], "meta": {"k": 1},
         "nothing": None, "mixed": "x"},
        {"label": 2, "flag": False, "score": 2.5, "mixed": 3, "extra": None, "late": 1},
        {"text": None, "label": None, "tags": [], "meta": None, "late": True},
    ])
    inspection = inspect_file(path, "jsonl")
    assert inspection.num_rows == 3
    assert types(inspection) == {
        "text": "string", "label": "integer", "flag": "boolean", "score": "float",
        "tags": "list", "meta": "object", "nothing": "null", "mixed": "mixed", "extra": "null",
        "late": "mixed",
    }
    assert [column.name for column in inspection.columns][-2:] == ["extra", "late"]


def test_jsonl_blank_lines_bom_and_crlf(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", '\ufeff{"a": 1}\r\n\r\n  \r\n{"a": 2}\r\n')
    assert inspect_file(path, "jsonl").num_rows == 2
    assert read_preview(path, "jsonl", 5) == [{"a": 1}, {"a": 2}]


def test_jsonl_invalid_line_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", '{"a": 1}\n\n{"a": 2,}\n')
    err = error(path, "jsonl")
    assert (err.code, err.line) == ("dataset_invalid_json", 3)
    assert "line 3" in err.message


@pytest.mark.parametrize(("line", "kind"), [("[1, 2]", "array"), ('"text"', "string"),
                                            ("3", "number"), ("null", "null")])
def test_jsonl_non_object_line(tmp_path: Path, line: str, kind: str) -> None:
    err = error(write(tmp_path, "d.jsonl", '{"a": 1}\n' + line + "\n"), "jsonl")
    assert (err.code, err.line) == ("dataset_invalid_json", 2)
    assert "Line 2" in err.message and kind in err.message and "object" in err.message


def test_jsonl_deep_nesting_is_invalid_json(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", '{"a": 1}\n{"a": ' + "[" * 100_000 + "\n")
    err = error(path, "jsonl")
    assert (err.code, err.line) == ("dataset_invalid_json", 2)
    with pytest.raises(DatasetFormatError):
        read_preview(path, "jsonl", 5)


@pytest.mark.parametrize("depth", [500, 900, 990])
def test_nesting_near_the_limit_never_escapes_as_recursion_error(tmp_path: Path,
                                                                 depth: int) -> None:
    path = write(tmp_path, "d.jsonl", '{"a": ' + "[" * depth + "]" * depth + "}\n")
    for read in (lambda: inspect_file(path, "jsonl"), lambda: read_preview(path, "jsonl", 1)):
        try:
            read()
        except DatasetFormatError as err:
            assert err.code == "dataset_invalid_json"


def test_jsonl_too_many_columns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path, [{"a": 1, "b": 2}, {"c": 3}])
    assert len(inspect_file(path, "jsonl", max_columns=3).columns) == 3
    err = error(path, "jsonl", max_columns=2)
    assert err.code == "dataset_too_many_columns" and "'c'" in err.message


def test_jsonl_nan_and_infinity_read_as_null(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", '{"x": 1.5, "y": NaN}\n{"x": -Infinity, "y": null}\n')
    assert types(inspect_file(path, "jsonl")) == {"x": "float", "y": "null"}


def test_jsonl_preview_is_json_ready_and_lazy(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", '{"x": NaN, "y": [Infinity, 1.5]}\n{"x": 2}\nnot json\n')
    assert read_preview(path, "jsonl", 2) == [{"x": None, "y": [None, 1.5]}, {"x": 2}]
    json.dumps(read_preview(path, "jsonl", 2), allow_nan=False)


# --- JSON --------------------------------------------------------------------------------

ROWS = [{"text": "a", "label": 0}, {"text": "b", "label": 1.5}]


@pytest.mark.parametrize("document", [ROWS, {"data": ROWS}, {"version": 2, "data": ROWS}])
def test_json_array_and_data_wrapper(tmp_path: Path, document: object) -> None:
    path = write(tmp_path, "d.json", json.dumps(document, indent=2))
    inspection = inspect_file(path, "json")
    assert (inspection.num_rows, types(inspection)) == (2, {"text": "string", "label": "float"})
    assert read_preview(path, "json", 1) == [ROWS[0]]


@pytest.mark.parametrize("document", ["[]", '{"data": []}', " [ ]\n"])
def test_json_without_rows_is_empty(tmp_path: Path, document: str) -> None:
    path = write(tmp_path, "d.json", document)
    assert error(path, "json").code == "dataset_empty"
    assert read_preview(path, "json", 5) == []


@pytest.mark.parametrize(("document", "needle"), [
    ('{"text": "a"}', "without a \"data\" array"), ('{"data": 3}', "without a \"data\" array"),
    ('"text"', "JSON string"), ("42", "JSON number"),
])
def test_json_wrong_shape(tmp_path: Path, document: str, needle: str) -> None:
    err = error(write(tmp_path, "d.json", document), "json")
    assert err.code == "dataset_invalid_json"
    assert needle in err.message and "array of objects" in err.message


def test_json_item_not_an_object(tmp_path: Path) -> None:
    err = error(write(tmp_path, "d.json", '[{"a": 1}, [1, 2]]'), "json")
    assert err.code == "dataset_invalid_json" and "Item 2" in err.message


def test_json_syntax_error_has_line(tmp_path: Path) -> None:
    err = error(write(tmp_path, "d.json", '[\n  {"a": 1},\n  {"a": }\n]'), "json")
    assert (err.code, err.line) == ("dataset_invalid_json", 3)


def test_json_lines_named_json_gets_a_hint(tmp_path: Path) -> None:
    err = error(write(tmp_path, "d.json", '{"a": 1}\n{"a": 2}\n'), "json")
    assert (err.code, err.line) == ("dataset_invalid_json", 2)
    assert "jsonl" in err.message


def test_json_over_the_size_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "_JSON_MAX_BYTES", 100)
    err = error(write(tmp_path, "d.json", json.dumps(ROWS * 10)), "json")
    assert err.code == "dataset_too_large" and "JSON Lines" in err.message


# --- Parquet -----------------------------------------------------------------------------

def write_parquet(tmp_path: Path, table: pa.Table, **kwargs: object) -> Path:
    path = tmp_path / "d.parquet"
    pq.write_table(table, path, **kwargs)
    return path


def test_parquet_types_and_count(tmp_path: Path) -> None:
    table = pa.table({
        "text": ["a", "b", None], "label": pa.array([1, 2, 3], pa.int8()),
        "score": [0.5, None, 1.0], "flag": [True, False, None],
        "tags": [["x"], [], None], "meta": [{"k": 1}, {"k": 2}, None],
        "cat": pa.array(["p", "q", "p"]).dictionary_encode(),
        "money": pa.array([Decimal("1.50"), None, Decimal(2)], pa.decimal128(5, 2)),
        "when": pa.array([1, 2, None], pa.timestamp("ns")),
        "nothing": pa.nulls(3),
    })
    inspection = inspect_file(write_parquet(tmp_path, table), "parquet")
    assert inspection.num_rows == 3
    assert types(inspection) == {
        "text": "string", "label": "integer", "score": "float", "flag": "boolean",
        "tags": "list", "meta": "object", "cat": "string", "money": "float", "when": "string",
        "nothing": "null",
    }


def test_parquet_preview_is_json_ready(tmp_path: Path) -> None:
    table = pa.table({
        "label": list(range(5000)), "score": [float("nan")] + [1.0] * 4999,
        "money": pa.array([Decimal("1.50")] * 5000, pa.decimal128(5, 2)),
        "when": pa.array([1_000_000_000] * 5000, pa.timestamp("ns", "UTC")),
        "day": pa.array([1] * 5000, pa.date32()), "blob": [b"\xffhi"] * 5000,
    })
    path = write_parquet(tmp_path, table, row_group_size=700)
    rows = read_preview(path, "parquet", 1500)
    assert [row["label"] for row in rows] == list(range(1500))
    assert rows[0] == {"label": 0, "score": None, "money": 1.5,
                       "when": "1970-01-01 00:00:01.000000000Z", "day": "1970-01-02",
                       "blob": "\ufffdhi"}
    json.dumps(rows, allow_nan=False)
    assert read_preview(path, "parquet", 0) == []


def test_parquet_without_rows_is_empty(tmp_path: Path) -> None:
    path = write_parquet(tmp_path, pa.table({"a": pa.array([], pa.int64())}))
    assert error(path, "parquet").code == "dataset_empty"
    assert read_preview(path, "parquet", 3) == []


def test_parquet_too_many_columns(tmp_path: Path) -> None:
    path = write_parquet(tmp_path, pa.table({f"c{i}": [i] for i in range(4)}))
    assert error(path, "parquet", max_columns=3).code == "dataset_too_many_columns"


@pytest.mark.parametrize("damage", ["csv", "truncated", "footer"])
def test_corrupt_parquet_is_unreadable(tmp_path: Path, damage: str) -> None:
    good = write_parquet(tmp_path, pa.table({"a": list(range(1000))})).read_bytes()
    data = {"csv": b"a,b\n1,2\n", "truncated": good[: len(good) // 2],
            "footer": good[:-12] + b"\x00" * 8 + good[-4:]}[damage]
    path = write(tmp_path, "bad.parquet", data)
    assert error(path, "parquet").code == "dataset_unreadable"
    with pytest.raises(DatasetFormatError) as caught:
        read_preview(path, "parquet", 5)
    assert caught.value.code == "dataset_unreadable"


# --- resources ---------------------------------------------------------------------------

def test_memory_stays_flat_on_a_50_mb_csv(tmp_path: Path) -> None:
    block = "".join(f'"review {i}: {"lorem ipsum " * 60}",{i % 5},{i / 7:.3f},true\n'
                    for i in range(1000))
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("text,label,score,ok\n")
        for _ in range(50 * 1024**2 // len(block) + 1):
            f.write(block)
    assert path.stat().st_size > 50 * 1024**2

    tracemalloc.start()
    try:
        inspection = inspect_file(path, "csv")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert types(inspection) == {"text": "string", "label": "integer", "score": "float",
                                 "ok": "boolean"}
    assert inspection.num_rows % 1000 == 0
    assert peak < 3 * 1024**2, f"peak traced memory {peak / 1024**2:.1f} MiB"


def test_memory_stays_flat_on_jsonl(tmp_path: Path) -> None:
    block = "".join(json.dumps({"text": "lorem ipsum " * 40, "label": i % 3}) + "\n"
                    for i in range(1000))
    path = tmp_path / "big.jsonl"
    path.write_text(block * 40, encoding="utf-8")

    tracemalloc.start()
    try:
        assert inspect_file(path, "jsonl").num_rows == 40_000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * 1024**2, f"peak traced memory {peak / 1024**2:.1f} MiB"


def test_no_heavy_imports(tmp_path: Path) -> None:
    write(tmp_path, "d.csv", "a,b\n1,x\n")
    write_jsonl(tmp_path, [{"a": 1}])
    pq.write_table(pa.table({"when": pa.array([1], pa.timestamp("ns")), "a": [[1]]}),
                   tmp_path / "d.parquet")
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from app.datasets.formats import inspect_file, read_preview
        from app.datasets.intake import take_in
        for name, fmt in [("d.csv", "csv"), ("d.jsonl", "jsonl"), ("d.parquet", "parquet")]:
            path = Path({str(tmp_path)!r}) / name
            inspect_file(path, fmt)
            print(read_preview(path, fmt, 5))
            take_in(path, name, None, None, max_bytes=10**8)
        heavy = {{"pandas", "torch", "transformers", "datasets"}} & set(sys.modules)
        assert not heavy, heavy
    """)
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", script], check=False, cwd=root,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
