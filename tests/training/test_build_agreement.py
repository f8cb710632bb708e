"""A model that fails the job fails its dry run with the same error: code, message and hint.

Both build the model with `build_model`, the job with its weights and the dry run on the meta
device; each case here is a model-side fault, run once as a job and once as a dry run.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.factories import pickled_model, sentiment_rows, seq2seq_rows, write_rows
from tests.training.helpers import RecordingSink, data_files, make_spec
from worker.training.dry_run import dry_run
from worker.training.errors import TrainingError
from worker.training.trainer import run_training

CANARY = "canary-ran"


def _tiny_bert(tmp_path: Path, models: dict[str, Path]) -> Path:
    return models["tiny_bert"]


def _tiny_gpt2(tmp_path: Path, models: dict[str, Path]) -> Path:
    return models["tiny_gpt2"]


def _pickle_weights_only(tmp_path: Path, models: dict[str, Path]) -> Path:
    return pickled_model(models["tiny_bert"], tmp_path / "pickled", tmp_path / CANARY)


def _missing_folder(tmp_path: Path, models: dict[str, Path]) -> Path:
    return tmp_path / "no-such-model"


def _unknown_architecture(tmp_path: Path, models: dict[str, Path]) -> Path:
    folder = shutil.copytree(models["tiny_bert"], tmp_path / "unknown")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "no-such-family"}))
    return folder


def _texts(n: int) -> list[dict[str, Any]]:
    return [{"text": row["text"]} for row in sentiment_rows(n)]


# (task, model, rows, spec fields, the error code both must give)
CASES: dict[str, tuple[str, Callable[[Path, dict[str, Path]], Path], list[dict[str, Any]],
                       dict[str, Any], str]] = {
    "causal-lm-on-an-encoder": ("causal-lm", _tiny_bert, _texts(20), {}, "invalid_spec"),
    "seq2seq-on-a-decoder": ("seq2seq", _tiny_gpt2, seq2seq_rows(20), {"model": "tiny-gpt2"},
                             "invalid_spec"),
    "pickle-weights": ("text-classification", _pickle_weights_only, sentiment_rows(20), {},
                       "unsafe_model_format"),
    "missing-model": ("text-classification", _missing_folder, sentiment_rows(20), {},
                      "model_not_found"),
    "unknown-architecture": ("text-classification", _unknown_architecture, sentiment_rows(20),
                             {}, "model_load_failed"),
    "more-frozen-layers-than-the-model-has": (
        "text-classification", _tiny_bert, sentiment_rows(20), {"freeze": {"bottom_layers": 3}},
        "invalid_spec"),
    "lora-on-a-layer-the-model-lacks": (
        "text-classification", _tiny_bert, sentiment_rows(20),
        {"lora": {"r": 2, "target_modules": ["no_such_layer"]}}, "invalid_spec"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_job_and_its_dry_run_fail_alike(case: str, tmp_path: Path, tiny_bert: Path,
                                            tiny_gpt2: Path) -> None:
    task, model_of, rows, fields, code = CASES[case]
    model = str(model_of(tmp_path, {"tiny_bert": tiny_bert, "tiny_gpt2": tiny_gpt2}))
    spec = make_spec(task, **fields)
    files = data_files(write_rows(tmp_path / "train.jsonl", rows))

    with pytest.raises(TrainingError) as job:
        run_training(spec, files, model, tmp_path / "out", events=RecordingSink())
    report = dry_run(spec, files, model)

    assert job.value.code == code, job.value.message
    assert not report["valid"]
    assert report["errors"] == [{"code": code, "message": job.value.message,
                                 "hint": job.value.hint}]
    assert not (tmp_path / CANARY).exists()
