"""FSDP: one job's model sharded across its ranks. torchrun starts the trainer twice on the CPU
(gloo); the job trains as one of the same effective batch on one device does, saves a whole
model, and writes checkpoints in shards, one file per rank, that a resume continues from.

Run as a script under torchrun (`python -m torch.distributed.run ... test_fsdp.py SPEC OUT
CHECKPOINT`), this file is the trainer child resuming from CHECKPOINT, which the standalone
runner cannot do.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from transformers import AutoModelForSequenceClassification

from tests.factories import sentiment_rows, write_rows
from tests.training.helpers import RecordingSink, data_files, make_spec, torchrun
from worker.training.compute import ModelTraits, resolve_compute
from worker.training.dry_run import dry_run
from worker.training.hardware import detect
from worker.training.trainer import run_training

ROOT = Path(__file__).resolve().parents[2]
# As for DDP (test_distributed.py): the ranks see the rows in another order than one does.
EVAL_LOSS_TOLERANCE = 0.1
# A resume is exact but for the last bits (as under DDP): the loss agrees to this share.
RESUME_TOLERANCE = 1e-3
RANKS = 2
STEPS_PER_EPOCH = 16  # 256 rows, 2 ranks of 8 rows a step


def test_two_sharded_ranks_train_like_one_and_resume_from_their_shards(
        tmp_path: Path, tiny_bert: Path) -> None:
    train = write_rows(tmp_path / "train.jsonl", sentiment_rows(256, seed=1))
    validation = write_rows(tmp_path / "validation.jsonl", sentiment_rows(64, seed=2))
    dataset = {"train": str(train), "validation": str(validation)}
    # fp32: the resume is then compared to the last bits, on CPUs with bf16 and without.
    hyperparameters = {"epochs": 2, "learning_rate": 3e-3, "seed": 7}
    compute = {"precision": "fp32"}

    one = run_training(make_spec(dataset=dataset, compute=compute,
                                 hyperparameters={**hyperparameters, "batch_size": 16}),
                       data_files(train, validation), str(tiny_bert), tmp_path / "one",
                       events=RecordingSink())

    spec = tmp_path / "sharded.json"
    spec.write_text(make_spec(model=tiny_bert.name, dataset=dataset,
                              hyperparameters={**hyperparameters, "batch_size": 8},
                              checkpoint_steps=STEPS_PER_EPOCH,
                              # Each evaluation's weights gathered, the best put back in shards.
                              evaluation={"keep_best_model": True,
                                          "metric_for_best_model": "loss"},
                              compute={**compute, "gpus": RANKS, "distributed": "fsdp"},
                              ).model_dump_json())
    ranks = torchrun(["-m", "worker.runner", "--spec", str(spec), "--out",
                       str(tmp_path / "sharded")], tiny_bert.parent)
    lines = ranks.stdout.splitlines()
    sharded = json.loads("\n".join(lines[lines.index("{"):]))
    assert sum('"event": "saved"' in line for line in ranks.stderr.splitlines()) == 1
    assert abs(sharded["eval_loss"] - one["eval_loss"]) < EVAL_LOSS_TOLERANCE * one["eval_loss"]
    assert sharded["num_input_tokens_seen"] == one["num_input_tokens_seen"]
    assert sharded["best_model"]["value"] == sharded["eval_loss"]

    # The main rank saved the whole model, gathered from the shards: a plain model folder.
    model_dir = tmp_path / "sharded" / "model"
    model, loading = AutoModelForSequenceClassification.from_pretrained(
        model_dir, output_loading_info=True)
    assert not loading["missing_keys"] and not loading["unexpected_keys"]
    assert sum(p.numel() for p in model.parameters()) == _parameters(tiny_bert)
    card = (model_dir / "README.md").read_text()
    assert "| distributed | fsdp |" in card and "| effective_batch_size | 16 |" in card

    # Each rank wrote its own shard of the weights and of the optimizer state.
    checkpoint = tmp_path / "sharded" / "trainer" / f"checkpoint-{STEPS_PER_EPOCH}"
    for state in ("pytorch_model_fsdp_0", "optimizer_0"):
        assert sorted(p.name for p in (checkpoint / state).glob("*.distcp")) == [
            f"__{rank}_0.distcp" for rank in range(RANKS)]
    assert not list(checkpoint.glob("*.safetensors")), "no whole copy in a checkpoint"

    # Every rank restores its shards and continues to where the unbroken run ended.
    resume_from = shutil.copytree(checkpoint, tmp_path / "kept" / checkpoint.name)
    resumed = torchrun([__file__, str(spec), str(tmp_path / "resumed"), str(resume_from)],
                        tiny_bert.parent)
    resumed_loss = json.loads(next(line for line in reversed(resumed.stdout.splitlines())
                                   if line.startswith('{"')))["eval_loss"]
    assert abs(resumed_loss - sharded["eval_loss"]) < RESUME_TOLERANCE * sharded["eval_loss"]


def test_auto_is_ddp() -> None:
    compute = resolve_compute(make_spec(compute={"gpus": 2}), detect(),
                              ModelTraits(sdpa=True, flash_attention=False, packed_rows=False),
                              rows_vary_in_length=True, train_rows=None)

    assert compute.distributed == "ddp" and "fsdp" not in compute.training_arguments()


def test_the_dry_run_counts_each_ranks_share_of_a_sharded_model(tmp_path: Path,
                                                                 tiny_bert: Path) -> None:
    files = data_files(write_rows(tmp_path / "train.csv", sentiment_rows(40)))

    def memory(distributed: str) -> dict[str, Any]:
        report = dry_run(make_spec(compute={"gpus": RANKS, "distributed": distributed,
                                            "precision": "fp32"}), files, str(tiny_bert))
        assert report["valid"], report["errors"]
        return report["memory"]

    whole, sharded = memory("ddp"), memory("fsdp")
    for part in ("weights_bytes", "gradients_bytes", "optimizer_bytes"):
        assert sharded[part] == math.ceil(whole[part] / RANKS)
    # Plus the blocks gathered whole: a BertLayer and the next one, in fp32.
    assert 0 < sharded["gathered_blocks_bytes"] < whole["weights_bytes"]
    assert sharded["activations_bytes"] == whole["activations_bytes"]
    assert (sharded["ranks"], sharded["distributed"]) == (RANKS, "fsdp")
    assert sharded["total_bytes"] < whole["total_bytes"]


def _parameters(model_dir: Path) -> int:
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    return sum(p.numel() for p in base.parameters())


def _resume(spec_path: Path, out: Path, checkpoint: Path) -> None:
    """The trainer child of one rank, resuming from `checkpoint`."""
    from app.jobs.spec import JobSpec
    from worker.training.data import DataFile, DataFiles, format_from_suffix
    from worker.training.distributed import is_main_rank
    from worker.training.events import SilentSink

    spec = JobSpec.model_validate_json(spec_path.read_text())
    files = {role: DataFile(Path(path), format_from_suffix(Path(path)))
             for role, path in spec.dataset.uploaded_ids().items()}
    model = Path(os.environ["FT_MODELS_DIR"]) / spec.model
    metrics = run_training(spec, DataFiles(**files), str(model), out, events=SilentSink(),
                           resume_from=checkpoint)
    if is_main_rank():
        print(json.dumps(metrics))


if __name__ == "__main__":
    _resume(*(Path(argument) for argument in sys.argv[1:4]))
