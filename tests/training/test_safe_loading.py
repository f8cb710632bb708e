"""A model's files can never run code in the trainer: weights load from safetensors only, and
a model's own Python code is never imported.

The canaries are files that would touch a marker file if they ever ran: a pickle whose
unpickling calls Path.touch, and a module that a config's auto_map points at. Each test
asserts what the job does and that the marker never appears.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
import torch

from tests.factories import pickled_model, sentiment_rows, write_canary, write_rows
from tests.training.helpers import RecordingSink, data_files, make_spec
from worker.runner import EXIT_FAILED
from worker.training.errors import ModelLoadFailed, UnsafeModelFormat
from worker.training.trainer import run_training

ROOT = Path(__file__).resolve().parents[2]
# A port nothing listens on: the Hub is unreachable however the machine is connected.
UNREACHABLE_HUB = "http://127.0.0.1:9"


def _edit_json(path: Path, **changes: Any) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _run(tmp_path: Path, model_source: Path | str, **fields: Any) -> None:
    train = write_rows(tmp_path / "train.csv", sentiment_rows(10))
    run_training(make_spec(**fields), data_files(train), str(model_source), tmp_path / "out",
                 events=RecordingSink())


def test_the_canary_runs_its_code_when_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    write_canary(tmp_path / "canary.bin", marker)

    torch.load(tmp_path / "canary.bin", weights_only=False)

    assert marker.exists()


def test_a_trainer_child_refuses_pickle_weights_without_unpickling_them(
        tmp_path: Path, tiny_bert: Path) -> None:
    marker = tmp_path / "canary-ran"
    pickled_model(tiny_bert, tmp_path / "models" / "pickled", marker)
    train = write_rows(tmp_path / "train.csv", sentiment_rows(10))
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(make_spec(model="pickled", dataset={"train": str(train)})
                         .model_dump_json())

    child = subprocess.run(
        [sys.executable, "-m", "worker.runner", "--spec", str(spec_path),
         "--out", str(tmp_path / "out")],
        cwd=ROOT, env={**os.environ, "FT_MODELS_DIR": str(tmp_path / "models")},
        capture_output=True, text=True, timeout=300, check=False)

    assert child.returncode == EXIT_FAILED, child.stderr
    reports = [line for line in child.stderr.splitlines() if line.startswith('{"error"')]
    error = json.loads(reports[-1])["error"]
    assert error["code"] == "unsafe_model_format"
    assert "'pickled'" in error["message"]
    assert "pytorch_model.bin" in error["message"]
    assert "safetensors" in error["hint"]
    assert not marker.exists()


@pytest.mark.parametrize("weights", [
    ("model.ckpt",),
    ("pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"),
])
def test_other_pickle_formats_are_refused_by_name(tmp_path: Path, tiny_bert: Path,
                                                  weights: tuple[str, ...]) -> None:
    marker = tmp_path / "canary-ran"
    model = pickled_model(tiny_bert, tmp_path / "pickled", marker, weights)

    with pytest.raises(UnsafeModelFormat) as caught:
        _run(tmp_path, model)

    assert all(name in caught.value.message for name in weights)
    assert not marker.exists()


def test_a_config_that_names_a_pickle_as_its_weights_is_refused(tmp_path: Path,
                                                                tiny_bert: Path) -> None:
    # from_pretrained would read this file even with use_safetensors=True and safetensors there.
    marker = tmp_path / "canary-ran"
    model = shutil.copytree(tiny_bert, tmp_path / "named")
    write_canary(model / "adapter_model.bin", marker)
    _edit_json(model / "config.json", transformers_weights="adapter_model.bin")

    with pytest.raises(UnsafeModelFormat, match="names 'adapter_model.bin' as its weights"):
        _run(tmp_path, model)

    assert not marker.exists()


def test_a_safetensors_index_that_lists_a_pickle_is_refused(tmp_path: Path,
                                                            tiny_bert: Path) -> None:
    marker = tmp_path / "canary-ran"
    model = pickled_model(tiny_bert, tmp_path / "indexed", marker)
    (model / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"embeddings.word_embeddings.weight": "pytorch_model.bin"}}))

    with pytest.raises(UnsafeModelFormat, match=r"lists shards that are not safetensors "
                                                r"\(pytorch_model\.bin\)"):
        _run(tmp_path, model)

    assert not marker.exists()


def test_a_cached_hub_model_with_pickle_weights_is_refused_offline(
        tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hub"
    snapshot = cache / "models--some-org--pickled" / "snapshots" / ("0" * 40)
    pickled_model(tiny_bert, snapshot, marker := tmp_path / "canary-ran")
    (cache / "models--some-org--pickled" / "refs").mkdir()
    (cache / "models--some-org--pickled" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", UNREACHABLE_HUB)

    with pytest.raises(UnsafeModelFormat, match=r"'some-org/pickled' has pickle weights only "
                                                r"\(pytorch_model\.bin\)"):
        _run(tmp_path, "some-org/pickled", model="some-org/pickled")

    assert not marker.exists()


def _with_auto_map(tiny_bert: Path, folder: Path, marker: Path) -> Path:
    """The tiny BERT whose config and tokenizer config point at a module that touches `marker`."""
    shutil.copytree(tiny_bert, folder)
    (folder / "custom.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    _edit_json(folder / "config.json", auto_map={
        "AutoConfig": "custom.Config", "AutoModelForSequenceClassification": "custom.Model"})
    _edit_json(folder / "tokenizer_config.json",
               auto_map={"AutoTokenizer": ["custom.Tokenizer", None]})
    return folder


def test_auto_map_code_is_ignored_for_a_known_architecture(tmp_path: Path,
                                                           tiny_bert: Path) -> None:
    marker = tmp_path / "custom-code-ran"
    model = _with_auto_map(tiny_bert, tmp_path / "custom", marker)

    _run(tmp_path, model, hyperparameters={"max_steps": 1})

    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()
    assert not marker.exists()


def test_a_model_that_needs_its_own_code_fails_without_running_it(tmp_path: Path,
                                                                  tiny_bert: Path) -> None:
    marker = tmp_path / "custom-code-ran"
    model = _with_auto_map(tiny_bert, tmp_path / "custom", marker)
    config = json.loads((model / "config.json").read_text())
    del config["model_type"]
    (model / "config.json").write_text(json.dumps(config))

    with pytest.raises(ModelLoadFailed, match="custom code"):
        _run(tmp_path, model)

    assert not marker.exists()
