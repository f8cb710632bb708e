"""Every failure a user can fix raises its own TrainingError, with a message that says what."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest

from tests.factories import regression_rows, sentiment_rows, write_rows
from tests.training.helpers import RecordingSink, data_files, make_spec
from worker.training.data import format_from_suffix
from worker.training.errors import (
    DatasetInvalid,
    DatasetUnavailable,
    ModelNotFound,
)
from worker.training.trainer import run_training

# A port nothing listens on: the Hub is unreachable however the machine is connected.
UNREACHABLE_HUB = "http://127.0.0.1:9"


@pytest.fixture
def unreachable_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", UNREACHABLE_HUB)


def _run(tmp_path: Path, model: Path | str, train_rows: list[dict[str, Any]],
         task: str = "text-classification",
         validation_rows: list[dict[str, Any]] | None = None, **fields: Any) -> None:
    train = write_rows(tmp_path / "train.csv", train_rows)
    validation = (write_rows(tmp_path / "validation.csv", validation_rows)
                  if validation_rows is not None else None)
    run_training(make_spec(task, **fields), data_files(train, validation), str(model),
                 tmp_path / "out", events=RecordingSink())


def test_missing_text_column_is_named_with_the_columns_present(tmp_path: Path,
                                                               tiny_bert: Path) -> None:
    rows = [{"sentence": row["text"], "label": row["label"]} for row in sentiment_rows(10)]

    with pytest.raises(DatasetInvalid, match="no column 'text'; its columns are 'sentence', "
                                             "'label'") as caught:
        _run(tmp_path, tiny_bert, rows)

    assert caught.value.code == "dataset_invalid"


def test_one_class_only(tmp_path: Path, tiny_bert: Path) -> None:
    with pytest.raises(DatasetInvalid, match=r"only one class \('positive'\)"):
        _run(tmp_path, tiny_bert, sentiment_rows(10, labels=("positive",)))


def test_non_numeric_regression_labels(tmp_path: Path, tiny_bert: Path) -> None:
    rows = [*regression_rows(8), {"text": "great film", "score": "high"}]

    with pytest.raises(DatasetInvalid, match=r"numeric labels.*'score' holds 'high'"):
        _run(tmp_path, tiny_bert, rows, task="text-regression",
             dataset={"label_column": "score"})


def test_validation_label_unseen_in_train_is_named(tmp_path: Path, tiny_bert: Path) -> None:
    validation = sentiment_rows(9, labels=("negative", "positive", "mixed"))

    with pytest.raises(DatasetInvalid, match="validation data has labels that the training "
                                             "data never has: 'mixed'"):
        _run(tmp_path, tiny_bert, sentiment_rows(10), validation_rows=validation,
             dataset={"validation": "uploaded-val"})


def test_all_rows_empty(tmp_path: Path, tiny_bert: Path) -> None:
    rows: list[dict[str, Any]] = [{"text": "   ", "label": "positive"},
                                  {"text": None, "label": "negative"},
                                  {"text": "fine", "label": None}]

    with pytest.raises(DatasetInvalid, match="no usable rows: all 3 rows"):
        _run(tmp_path, tiny_bert, rows)


def test_text_column_without_text(tmp_path: Path, tiny_bert: Path) -> None:
    rows = [{"text": ["a", "list"], "label": "positive"}, {"text": ["b"], "label": "negative"}]
    train = write_rows(tmp_path / "train.jsonl", rows)

    with pytest.raises(DatasetInvalid, match="column 'text' must hold text"):
        run_training(make_spec(), data_files(train), str(tiny_bert), tmp_path / "out",
                     events=RecordingSink())


def test_unreadable_file(tmp_path: Path, tiny_bert: Path) -> None:
    train = tmp_path / "train.parquet"
    train.write_text("this is not parquet")

    with pytest.raises(DatasetInvalid, match=r"could not read the train file 'train\.parquet'"):
        run_training(make_spec(), data_files(train), str(tiny_bert), tmp_path / "out",
                     events=RecordingSink())


def test_unknown_suffix() -> None:
    with pytest.raises(DatasetInvalid, match=r"cannot tell the format of 'data\.xlsx'"):
        format_from_suffix(Path("data.xlsx"))


def test_missing_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="does not exist"):
        _run(tmp_path, tmp_path / "no-such-model", sentiment_rows(10))


@pytest.mark.usefixtures("unreachable_hub")
def test_unreachable_hub_model_fails_fast(tmp_path: Path) -> None:
    started = time.monotonic()

    with pytest.raises(ModelNotFound, match="Hub is unreachable"):
        _run(tmp_path, "some-org/some-model", sentiment_rows(10))

    assert time.monotonic() - started < 10


@pytest.mark.usefixtures("unreachable_hub")
def test_unreachable_hub_dataset_fails_fast(tmp_path: Path, tiny_bert: Path) -> None:
    spec = make_spec(dataset={"train": None, "hub": {"hub": "some-org/some-data"}})
    started = time.monotonic()

    with pytest.raises(DatasetUnavailable, match="'some-org/some-data'") as caught:
        run_training(spec, data_files(), str(tiny_bert), tmp_path / "out",
                     events=RecordingSink())

    assert time.monotonic() - started < 10
    assert caught.value.code == "dataset_unavailable"
