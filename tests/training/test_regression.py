"""Regression: one output, MSE loss from problem_type, and metrics that stay valid JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from tests.factories import regression_rows, write_rows
from tests.training.helpers import RecordingSink, data_files, make_spec
from worker.training.metrics import regression_metrics
from worker.training.trainer import run_training


def test_regression_trains_one_output_with_regression_metrics(
        tmp_path: Path, tiny_bert: Path, sink: RecordingSink) -> None:
    train = write_rows(tmp_path / "train.csv", regression_rows(200))
    spec = make_spec("text-regression", dataset={"label_column": "score", "validation_split": 0.2})

    metrics = run_training(spec, data_files(train), str(tiny_bert), tmp_path / "out", events=sink)

    assert {"eval_mse", "eval_mae", "eval_r2", "eval_pearson", "eval_spearman"} <= set(metrics)
    assert math.isfinite(metrics["eval_mse"])
    assert "validation_per_class" not in metrics
    config = json.loads((tmp_path / "out" / "model" / "config.json").read_text())
    assert config["problem_type"] == "regression"
    assert len(config["id2label"]) == 1
    assert sink.data_of("dataset_loaded")[0]["num_labels"] == 1


def test_constant_predictions_give_none_correlations_not_nan() -> None:
    metrics = regression_metrics(np.full((4, 1), 0.5), np.array([0.0, 1.0, 2.0, 3.0]))

    assert metrics["pearson"] is None and metrics["spearman"] is None
    assert metrics["mse"] is not None
    json.dumps(metrics, allow_nan=False)
