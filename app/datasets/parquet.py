"""Parquet uploads: types from the schema in the footer, previews one batch at a time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from app.datasets.inspection import (
    ColumnInfo,
    DatasetFormatError,
    Inspection,
    empty_file,
    jsonable,
    too_many_columns,
)

_PARQUET_BATCH_ROWS = 1024
_TEMPORAL = (pa.types.is_timestamp, pa.types.is_date, pa.types.is_time, pa.types.is_duration)


@contextmanager
def _parquet(path: Path) -> Iterator[pq.ParquetFile]:
    try:
        with pq.ParquetFile(path) as parquet:
            yield parquet
    except (pa.ArrowException, OSError) as err:  # a damaged footer raises a bare OSError
        raise DatasetFormatError(f"The file is not a readable Parquet file: {err}",
                                 code="dataset_unreadable") from None


def inspect_parquet(path: Path, max_columns: int) -> Inspection:
    with _parquet(path) as parquet:
        schema, num_rows = parquet.schema_arrow, parquet.metadata.num_rows
    if len(schema) > max_columns:
        raise too_many_columns(str(len(schema)), max_columns)
    if num_rows == 0:
        raise empty_file("The Parquet file has no rows.")
    return Inspection(num_rows, [ColumnInfo(field.name, _arrow_kind(field.type))
                                 for field in schema])


def _arrow_kind(arrow_type: pa.DataType) -> str:
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    t = pa.types  # order matters: structs, maps and unions are nested types too
    checks = ((t.is_boolean, "boolean"), (t.is_integer, "integer"), (t.is_floating, "float"),
              (t.is_decimal, "float"), (t.is_struct, "object"), (t.is_map, "object"),
              (t.is_union, "mixed"), (t.is_nested, "list"), (t.is_null, "null"))
    # Text, binary, dates, times and durations all preview as text.
    return next((kind for test, kind in checks if test(arrow_type)), "string")


def parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Every row, one batch in memory at a time, as JSON-ready dicts."""
    with _parquet(path) as parquet:
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
            for row in _plain_temporal(batch).to_pylist():
                yield jsonable(row)


def _plain_temporal(batch: pa.RecordBatch) -> pa.RecordBatch:
    # to_pylist() turns nanosecond times into pandas objects, importing pandas; Arrow's own
    # cast to text does not.
    columns = [column.cast(pa.string()) if any(test(column.type) for test in _TEMPORAL)
               else column for column in batch.columns]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
