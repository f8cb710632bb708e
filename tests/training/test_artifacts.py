"""The model folder, reproducibility, and the hyperparameters that reach the Trainer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.factories import sentiment_rows, write_rows
from tests.training.helpers import RecordingSink, data_files, make_spec
from worker.training.trainer import run_training

# Timings, and the telemetry that follows from them, differ between runs; nothing else may.
TIMING_WORDS = ("runtime", "per_second", "mfu", "peak_memory_bytes", "peak_flops")


def _timeless(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metrics.items()
            if not any(word in key for word in TIMING_WORDS)}


def test_model_folder_holds_everything_and_nothing_else(tmp_path: Path, tiny_bert: Path,
                                                        sink: RecordingSink) -> None:
    train = write_rows(tmp_path / "train.csv", sentiment_rows(64))
    spec = make_spec(dataset={"validation_split": 0.25}, hyperparameters={"epochs": 1})

    metrics = run_training(spec, data_files(train), str(tiny_bert), tmp_path / "out", events=sink)

    model_dir = tmp_path / "out" / "model"
    files = {path.name for path in model_dir.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
            "training_args.json", "trainer_state.json", "metrics.json", "README.md"} <= files
    assert "training_args.bin" not in files
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["model", "trainer"]
    assert json.loads((model_dir / "metrics.json").read_text()) == metrics
    config = json.loads((model_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    args = json.loads((model_dir / "training_args.json").read_text())
    assert args["learning_rate"] == 5e-3 and args["save_strategy"] == "no"
    state = json.loads((model_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    card = (model_dir / "README.md").read_text()
    assert "tiny-bert" in card and "`negative`" in card and "eval_accuracy" in card
    assert "48 train" in card
    assert sink.data_of("saved")[0]["path"] == str(model_dir)


def test_same_spec_and_data_give_identical_metrics(tmp_path: Path, tiny_bert: Path) -> None:
    train = write_rows(tmp_path / "train.csv", sentiment_rows(80))
    spec = make_spec(dataset={"validation_split": 0.2, "test_split": 0.2},
                     hyperparameters={"epochs": 2})

    first, second = (run_training(spec, data_files(train), str(tiny_bert), tmp_path / name,
                                  events=RecordingSink()) for name in ("first", "second"))

    assert _timeless(first) == _timeless(second)
    assert first["eval_loss"] > 0


def test_another_seed_gives_other_metrics(tmp_path: Path, tiny_bert: Path) -> None:
    train = write_rows(tmp_path / "train.csv", sentiment_rows(80))
    losses = [
        run_training(make_spec(hyperparameters={"epochs": 1, "seed": seed}), data_files(train),
                     str(tiny_bert), tmp_path / str(seed), events=RecordingSink())["train_loss"]
        for seed in (1, 2)]

    assert losses[0] != losses[1]


def test_max_steps_overrides_epochs(tmp_path: Path, tiny_bert: Path, sink: RecordingSink) -> None:
    train = write_rows(tmp_path / "train.csv", sentiment_rows(64))
    spec = make_spec(hyperparameters={"epochs": 50, "max_steps": 5, "batch_size": 8})

    run_training(spec, data_files(train), str(tiny_bert), tmp_path / "out", events=sink)

    state = json.loads((tmp_path / "out" / "model" / "trainer_state.json").read_text())
    assert state["global_step"] == 5 and state["max_steps"] == 5


def test_step_evaluation_logs_eval_metrics(tmp_path: Path, tiny_bert: Path,
                                           sink: RecordingSink) -> None:
    train = write_rows(tmp_path / "train.csv", sentiment_rows(80))
    spec = make_spec(dataset={"validation_split": 0.2},
                     evaluation={"strategy": "steps", "steps": 2},
                     hyperparameters={"epochs": 1, "batch_size": 8})

    run_training(spec, data_files(train), str(tiny_bert), tmp_path / "out", events=sink)

    state = json.loads((tmp_path / "out" / "model" / "trainer_state.json").read_text())
    eval_steps = [entry["step"] for entry in state["log_history"] if "eval_accuracy" in entry]
    assert eval_steps == [2, 4, 6, 8]


@pytest.mark.parametrize("hyperparameters", [
    {"optimizer": "sgd", "learning_rate": 0.1},
    {"optimizer": "adafactor", "lr_scheduler": "constant_with_warmup", "warmup_steps": 2},
    {"lr_scheduler": "cosine", "warmup_ratio": 0.5, "weight_decay": 0.01,
     "gradient_accumulation_steps": 2},
])
def test_optimizers_and_schedulers_run(tmp_path: Path, tiny_bert: Path, sink: RecordingSink,
                                       hyperparameters: dict[str, Any]) -> None:
    train = write_rows(tmp_path / "train.csv", sentiment_rows(64))
    spec = make_spec(hyperparameters={"epochs": 1, "batch_size": 8, **hyperparameters},
                     logging_steps=1)

    metrics = run_training(spec, data_files(train), str(tiny_bert), tmp_path / "out",
                           events=sink)

    args = json.loads((tmp_path / "out" / "model" / "training_args.json").read_text())
    expected_optimizer = {"sgd": "sgd", "adafactor": "adafactor"}.get(
        hyperparameters.get("optimizer", ""), "adamw_torch_fused")  # torch has it for CPUs
    assert args["optim"] == expected_optimizer
    assert args["lr_scheduler_type"] == hyperparameters.get("lr_scheduler", "linear")
    state = json.loads((tmp_path / "out" / "model" / "trainer_state.json").read_text())
    rates = [entry["learning_rate"] for entry in state["log_history"] if "learning_rate" in entry]
    assert len(set(rates)) > 1  # the scheduler moved the learning rate
    if "warmup_ratio" in hyperparameters:
        # transformers 5 reads a warmup_steps below 1 as a ratio of the training steps.
        assert args["warmup_steps"] == hyperparameters["warmup_ratio"]
    assert metrics["train_loss"] > 0
