"""Early stopping and the best model: training stops when the metric stalls, the best stays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import TrainerControl, TrainerState

from app.jobs.spec import EarlyStopping
from tests.factories import sentiment_rows, write_rows
from tests.training.helpers import RecordingSink, data_files, make_spec
from worker.training.best_model import BestModelKeeper
from worker.training.trainer import run_training


def test_patience_stops_before_the_last_epoch_and_keeps_the_best_model(
        tmp_path: Path, tiny_bert: Path, sink: RecordingSink) -> None:
    train = write_rows(tmp_path / "train.csv", sentiment_rows(96))
    validation = write_rows(tmp_path / "validation.csv", sentiment_rows(32, seed=1))
    # F1 cannot rise by more than 2: only the first evaluation ever improves, so training
    # stops at the third and the model of the first is the one kept.
    spec = make_spec(dataset={"validation": "uploaded-val"},
                     hyperparameters={"epochs": 8, "batch_size": 16},
                     early_stopping={"patience": 2, "threshold": 2.0})

    metrics = run_training(spec, data_files(train, validation), str(tiny_bert),
                           tmp_path / "out", events=sink)

    steps_per_epoch = 96 // 16
    state = json.loads((tmp_path / "out" / "model" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 * steps_per_epoch < 8 * steps_per_epoch
    [stopped] = sink.data_of("early_stopped")
    assert stopped["best_step"] == steps_per_epoch and stopped["patience"] == 2
    best = metrics["best_model"]
    assert best["step"] == steps_per_epoch and best["stopped_early"] is True
    assert best["metric"] == "eval_f1"
    # The final evaluation ran on the kept model: it scores exactly as the first evaluation
    # did, not as the last one did.
    history = [entry["eval_loss"] for entry in state["log_history"] if "eval_loss" in entry]
    assert len(history) == 3 and history[0] != history[-1]
    assert metrics["eval_loss"] == pytest.approx(best["metrics"]["eval_loss"], abs=1e-6)
    assert metrics["eval_loss"] == pytest.approx(history[0], abs=1e-6)
    assert metrics["eval_f1"] == pytest.approx(best["value"], abs=1e-9)


def test_keep_best_model_without_early_stopping_runs_every_epoch(
        tmp_path: Path, tiny_bert: Path, sink: RecordingSink) -> None:
    train = write_rows(tmp_path / "train.csv", sentiment_rows(64))
    spec = make_spec(dataset={"validation_split": 0.25},
                     hyperparameters={"epochs": 3, "batch_size": 16},
                     evaluation={"keep_best_model": True, "metric_for_best_model": "loss"})

    metrics = run_training(spec, data_files(train), str(tiny_bert), tmp_path / "out",
                           events=sink)

    state = json.loads((tmp_path / "out" / "model" / "trainer_state.json").read_text())
    eval_losses = [entry["eval_loss"] for entry in state["log_history"] if "eval_loss" in entry]
    assert len(eval_losses) == 3 and not sink.data_of("early_stopped")
    assert metrics["best_model"]["value"] == pytest.approx(min(eval_losses))
    assert metrics["eval_loss"] == pytest.approx(min(eval_losses), abs=1e-6)


def evaluate(keeper: BestModelKeeper, step: int, value: float) -> TrainerControl:
    control = TrainerControl()
    keeper.on_evaluate(None, TrainerState(global_step=step, epoch=step / 10), control,  # type: ignore[arg-type]
                       metrics={keeper.key: value})
    return control


def test_a_resumed_attempt_forgets_the_evaluations_after_its_checkpoint(
        tmp_path: Path, sink: RecordingSink) -> None:
    keeper = BestModelKeeper("loss", EarlyStopping(patience=2), tmp_path / "best", sink)
    keeper.on_train_begin(None, TrainerState(global_step=0), TrainerControl())  # type: ignore[arg-type]
    for step, value in ((10, 0.9), (20, 0.5), (30, 0.7)):
        assert not evaluate(keeper, step, value).should_training_stop

    resumed = BestModelKeeper("loss", EarlyStopping(patience=2), tmp_path / "best", sink)
    resumed.on_train_begin(None, TrainerState(global_step=20), TrainerControl())  # type: ignore[arg-type]
    assert [e.step for e in resumed.evaluations] == [10, 20]
    assert resumed.best is not None and resumed.best.step == 20
    # The replayed evaluation of step 30 and one more without improvement: patience spent.
    assert not evaluate(resumed, 30, 0.7).should_training_stop
    assert evaluate(resumed, 40, 0.6).should_training_stop
    assert sink.data_of("early_stopped")[-1]["best_step"] == 20


def test_a_fresh_start_ignores_an_old_record(tmp_path: Path, sink: RecordingSink) -> None:
    keeper = BestModelKeeper("f1", None, tmp_path / "best", sink)
    keeper.on_train_begin(None, TrainerState(global_step=0), TrainerControl())  # type: ignore[arg-type]
    evaluate(keeper, 10, 0.5)
    again = BestModelKeeper("f1", None, tmp_path / "best", sink)
    again.on_train_begin(None, TrainerState(global_step=0), TrainerControl())  # type: ignore[arg-type]
    assert again.evaluations == [] and again.best is None
