"""Classification really learns, in every file format, and the saved model predicts label names."""

from __future__ import annotations

import json
from pathlib import Path

from datasets import ClassLabel, Dataset, Features, Value
from transformers import AutoConfig, pipeline

from tests.factories import pair_rows, sentiment_rows, write_rows
from tests.training.helpers import RecordingSink, data_files, make_spec
from worker.training.trainer import run_training


def test_binary_string_labels_learn_and_predict_names(
        tmp_path: Path, tiny_bert: Path, sink: RecordingSink) -> None:
    train = write_rows(tmp_path / "train.csv", sentiment_rows(200))
    validation = write_rows(tmp_path / "validation.jsonl", sentiment_rows(40, seed=1))
    test = write_rows(tmp_path / "test.csv", sentiment_rows(40, seed=2))
    spec = make_spec(dataset={"validation": "uploaded-val", "test": "uploaded-test"})

    metrics = run_training(spec, data_files(train, validation, test), str(tiny_bert),
                           tmp_path / "out", events=sink)

    assert metrics["eval_accuracy"] >= 0.9
    assert metrics["test_accuracy"] >= 0.9
    assert {"eval_precision", "eval_recall", "eval_f1", "test_f1", "train_loss"} <= set(metrics)
    assert set(metrics["test_per_class"]) == {"negative", "positive"}
    assert metrics["test_per_class"]["positive"]["support"] == 20
    classifier = pipeline("text-classification", model=str(tmp_path / "out" / "model"))
    predictions = classifier(["the film was great and lovely", "an awful and boring story"])
    assert [p["label"] for p in predictions] == ["positive", "negative"]
    assert [data["split"] for data in sink.data_of("evaluated")] == ["validation", "test"]


def test_three_string_labels_from_parquet(tmp_path: Path, tiny_bert: Path,
                                          sink: RecordingSink) -> None:
    labels = ("neutral", "negative", "positive")
    train = write_rows(tmp_path / "train.parquet", sentiment_rows(240, labels=labels))
    spec = make_spec(dataset={"test_split": 0.2}, hyperparameters={"epochs": 4})

    metrics = run_training(spec, data_files(train), str(tiny_bert), tmp_path / "out",
                           events=sink)

    assert metrics["test_accuracy"] >= 0.8
    config = AutoConfig.from_pretrained(tmp_path / "out" / "model")
    assert config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert sink.data_of("dataset_loaded")[0]["labels"] == ["negative", "neutral", "positive"]
    assert sink.data_of("dataset_loaded")[0]["test_rows"] == 48


def test_integer_labels_from_tsv_keep_their_values_as_names(
        tmp_path: Path, tiny_bert: Path, sink: RecordingSink) -> None:
    # Numeric order, not string order: "10" comes after "2".
    train = write_rows(tmp_path / "train.tsv", sentiment_rows(150, labels=(2, 10, 0)))

    run_training(make_spec(), data_files(train), str(tiny_bert), tmp_path / "out", events=sink)

    config = json.loads((tmp_path / "out" / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "0", "1": "2", "2": "10"}
    assert config["problem_type"] == "single_label_classification"
    classifier = pipeline("text-classification", model=str(tmp_path / "out" / "model"))
    assert classifier("great lovely superb film")[0]["label"] in {"0", "2", "10"}


def test_class_label_feature_gives_its_names(tmp_path: Path, tiny_bert: Path,
                                             sink: RecordingSink) -> None:
    rows = sentiment_rows(60)
    features = Features({"text": Value("string"),
                         "label": ClassLabel(names=["negative", "positive"])})
    Dataset.from_list(rows, features=features).to_parquet(tmp_path / "train.parquet")

    run_training(make_spec(hyperparameters={"epochs": 1}), data_files(tmp_path / "train.parquet"),
                 str(tiny_bert), tmp_path / "out", events=sink)

    assert sink.data_of("dataset_loaded")[0]["labels"] == ["negative", "positive"]


def test_sentence_pairs_from_json_array(tmp_path: Path, tiny_bert: Path,
                                        sink: RecordingSink) -> None:
    train = write_rows(tmp_path / "train.json", pair_rows(120))
    spec = make_spec(dataset={"text_column": "premise", "text_pair_column": "hypothesis",
                              "validation_split": 0.2})

    metrics = run_training(spec, data_files(train), str(tiny_bert), tmp_path / "out",
                           events=sink)

    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert sink.data_of("dataset_loaded")[0]["labels"] == ["different", "same"]
    classifier = pipeline("text-classification", model=str(tmp_path / "out" / "model"))
    predictions = classifier([{"text": "cats the story", "text_pair": "film was cats"}])
    assert predictions[0]["label"] in {"same", "different"}


def test_label_column_already_called_labels(tmp_path: Path, tiny_bert: Path,
                                            sink: RecordingSink) -> None:
    rows = [{"text": row["text"], "labels": row["label"]} for row in sentiment_rows(40)]
    train = write_rows(tmp_path / "train.csv", rows)
    spec = make_spec(dataset={"label_column": "labels"}, hyperparameters={"epochs": 1})

    metrics = run_training(spec, data_files(train), str(tiny_bert), tmp_path / "out", events=sink)

    assert metrics["train_loss"] > 0
    assert sink.data_of("dataset_loaded")[0]["labels"] == ["negative", "positive"]
