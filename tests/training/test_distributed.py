"""One job on several ranks: torchrun starts the trainer twice on the CPU (gloo), the way a GPU
worker starts it on two GPUs (NCCL), and the job trains as one job of the same effective batch
on one device does."""

from __future__ import annotations

import json
from pathlib import Path

from tests.factories import sentiment_rows, write_rows
from tests.training.helpers import RecordingSink, data_files, make_spec, torchrun
from worker.training.trainer import run_training

ROOT = Path(__file__).resolve().parents[2]
# Two ranks see the rows in another order than one does (each its share of a shuffle), so
# the losses agree within a margin rather than to the last digit.
EVAL_LOSS_TOLERANCE = 0.1


def test_two_ranks_train_like_one_with_the_same_effective_batch(tmp_path: Path,
                                                                 tiny_bert: Path) -> None:
    train = write_rows(tmp_path / "train.jsonl", sentiment_rows(256, seed=1))
    validation = write_rows(tmp_path / "validation.jsonl", sentiment_rows(64, seed=2))
    dataset = {"train": str(train), "validation": str(validation)}
    hyperparameters = {"epochs": 2, "learning_rate": 3e-3, "seed": 7}

    one = run_training(make_spec(dataset=dataset,
                                 hyperparameters={**hyperparameters, "batch_size": 16}),
                       data_files(train, validation), str(tiny_bert), tmp_path / "one",
                       events=RecordingSink())

    spec_path = tmp_path / "two.json"
    spec_path.write_text(make_spec(model=tiny_bert.name, dataset=dataset,
                                   hyperparameters={**hyperparameters, "batch_size": 8},
                                   compute={"gpus": 2}).model_dump_json())
    ranks = torchrun(["-m", "worker.runner", "--spec", str(spec_path), "--out",
                      str(tmp_path / "two")], tiny_bert.parent)

    # Only the main rank reports and prints the metrics.
    lines = ranks.stdout.splitlines()
    two = json.loads("\n".join(lines[lines.index("{"):]))
    assert sum('"event": "saved"' in line for line in ranks.stderr.splitlines()) == 1
    assert abs(two["eval_loss"] - one["eval_loss"]) < EVAL_LOSS_TOLERANCE * one["eval_loss"]
    assert two["num_input_tokens_seen"] == one["num_input_tokens_seen"]
    card = (tmp_path / "two" / "model" / "README.md").read_text()
    assert "| ranks | 2 |" in card and "| effective_batch_size | 16 |" in card
    assert not list((tmp_path / "two").glob("cache*")), "each rank removes its cache"
