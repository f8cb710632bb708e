"""Multi-label classification: any number of labels per text, each predicted on its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoConfig, pipeline

from tests.factories import multi_label_rows, write_rows
from tests.training.helpers import RecordingSink, data_files, make_spec
from worker.training.errors import DatasetInvalid
from worker.training.trainer import run_training

MULTI_LABEL = {"label_column": "labels", "multi_label": True}


def test_learns_label_sets_and_predicts_each_label(tmp_path: Path, tiny_bert: Path,
                                                   sink: RecordingSink) -> None:
    train = write_rows(tmp_path / "train.jsonl", multi_label_rows(300))
    validation = write_rows(tmp_path / "validation.jsonl", multi_label_rows(60, seed=1))
    spec = make_spec(dataset={**MULTI_LABEL, "validation": "uploaded-val"},
                     hyperparameters={"epochs": 6})

    metrics = run_training(spec, data_files(train, validation), str(tiny_bert),
                           tmp_path / "out", events=sink)

    assert metrics["eval_f1_micro"] >= 0.8 and metrics["eval_subset_accuracy"] >= 0.5
    assert metrics["eval_hamming_loss"] <= 0.15
    assert {"eval_f1_macro", "eval_precision_micro", "eval_recall_micro"} <= set(metrics)
    assert set(metrics["validation_per_class"]) == {"negative", "neutral", "positive"}
    config = AutoConfig.from_pretrained(tmp_path / "out" / "model")
    assert config.problem_type == "multi_label_classification"
    classify = pipeline("text-classification", model=str(tmp_path / "out" / "model"),
                        top_k=None)
    [scores] = classify(["great lovely awful terrible the movie"])
    by_label = {score["label"]: score["score"] for score in scores}
    # Sigmoid scores, one per label, not a distribution: both cued labels lead, neutral is out.
    assert min(by_label["negative"], by_label["positive"]) > by_label["neutral"], scores
    assert by_label["neutral"] < 0.5 and max(by_label.values()) >= 0.5


def test_an_untrained_model_scores_worse(tmp_path: Path, tiny_bert: Path,
                                         sink: RecordingSink) -> None:
    train = write_rows(tmp_path / "train.jsonl", multi_label_rows(120))
    spec = make_spec(dataset={**MULTI_LABEL, "validation_split": 0.25},
                     hyperparameters={"max_steps": 1, "learning_rate": 1e-9})

    metrics = run_training(spec, data_files(train), str(tiny_bert), tmp_path / "out",
                           events=sink)

    assert metrics["eval_f1_micro"] < 0.8


@pytest.mark.parametrize(("labels", "words"), [
    ("positive", "needs a list of labels"),
    (["positive"], "fewer than two labels"),
])
def test_bad_label_lists_are_named(tmp_path: Path, tiny_bert: Path, sink: RecordingSink,
                                   labels: object, words: str) -> None:
    rows = [{"text": "a great film", "labels": labels}] * 8
    train = write_rows(tmp_path / "train.jsonl", rows)
    with pytest.raises(DatasetInvalid, match=words):
        run_training(make_spec(dataset=MULTI_LABEL), data_files(train), str(tiny_bert),
                     tmp_path / "out", events=sink)
