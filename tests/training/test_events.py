"""The events a run emits, and what they carry."""

from __future__ import annotations

from pathlib import Path

from tests.factories import sentiment_rows, write_rows
from tests.training.helpers import RecordingSink, data_files, make_spec
from worker.training.trainer import run_training


def test_events_report_rows_dropped_and_parameters(tmp_path: Path, tiny_bert: Path,
                                                   sink: RecordingSink) -> None:
    rows = sentiment_rows(40)
    rows[0]["text"], rows[1]["text"], rows[2]["label"] = "", "  ", None
    validation = [*sentiment_rows(10, seed=3), {"text": None, "label": "positive"}]
    train_file = write_rows(tmp_path / "train.jsonl", rows)
    validation_file = write_rows(tmp_path / "validation.jsonl", validation)
    spec = make_spec(dataset={"validation": "uploaded-val", "test_split": 0.25},
                     freeze={"embeddings": True}, hyperparameters={"epochs": 1})

    run_training(spec, data_files(train_file, validation_file), str(tiny_bert),
                 tmp_path / "out", events=sink)

    assert sink.kinds() == ["dataset_loaded", "model_loaded", "telemetry", "evaluated", "evaluated",
                           "saved"]
    loaded = sink.data_of("dataset_loaded")[0]
    assert loaded["dropped_rows"] == {"train": 3, "validation": 1}
    # The held-out fraction is of the 37 usable rows.
    assert (loaded["train_rows"], loaded["validation_rows"], loaded["test_rows"]) == (28, 10, 9)
    assert loaded["num_labels"] == 2 and loaded["labels"] == ["negative", "positive"]
    model = sink.data_of("model_loaded")[0]
    assert model["model"] == "tiny-bert"
    assert 0 < model["trainable_parameters"] < model["total_parameters"]
    evaluated = sink.data_of("evaluated")
    assert [data["split"] for data in evaluated] == ["validation", "test"]
    assert "eval_accuracy" in evaluated[0]["metrics"] and "test_f1" in evaluated[1]["metrics"]
