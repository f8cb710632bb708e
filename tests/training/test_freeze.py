"""Frozen parts of the model come out bit-identical; the head always trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.factories import sentiment_rows, write_rows
from tests.training.helpers import RecordingSink, data_files, make_spec
from worker.training.errors import InvalidSpec
from worker.training.trainer import run_training

# Tensor-name fragments of the backbone parts, per family (prefix-free: the saved backbone has
# no prefix, the fine-tuned model has its base_model_prefix).
EMBEDDINGS = "embeddings."
BOTTOM_LAYER = {"bert": "encoder.layer.0.", "roberta": "encoder.layer.0.",
                "electra": "encoder.layer.0.", "distilbert": "transformer.layer.0."}
TOP_LAYER = {family: prefix.replace(".0.", ".1.") for family, prefix in BOTTOM_LAYER.items()}


def _train(tmp_path: Path, model: Path, freeze: dict[str, object],
           sink: RecordingSink) -> dict[str, torch.Tensor]:
    train = write_rows(tmp_path / "train.csv", sentiment_rows(48))
    spec = make_spec(freeze=freeze, hyperparameters={"epochs": 1, "learning_rate": 1e-2})
    run_training(spec, data_files(train), str(model), tmp_path / "out", events=sink)
    return load_file(tmp_path / "out" / "model" / "model.safetensors")


def _by_suffix(tensors: dict[str, torch.Tensor], fragment: str) -> dict[str, torch.Tensor]:
    """Tensors whose name contains `fragment`, keyed from the fragment on."""
    return {name[name.index(fragment):]: tensor for name, tensor in tensors.items()
            if fragment in name}


def _same(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], fragment: str) -> bool:
    old, new = _by_suffix(before, fragment), _by_suffix(after, fragment)
    assert old and old.keys() == new.keys()
    return all(torch.equal(old[name], new[name]) for name in old)


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "electra"])
def test_embeddings_and_bottom_layer_frozen(tmp_path: Path, tiny_models: dict[str, Path],
                                            family: str, sink: RecordingSink) -> None:
    initial = load_file(tiny_models[family] / "model.safetensors")

    trained = _train(tmp_path, tiny_models[family], {"embeddings": True, "bottom_layers": 1},
                     sink)

    assert _same(initial, trained, EMBEDDINGS)
    assert _same(initial, trained, BOTTOM_LAYER[family])
    assert not _same(initial, trained, TOP_LAYER[family])
    loaded = sink.data_of("model_loaded")[0]
    assert 0 < loaded["trainable_parameters"] < loaded["total_parameters"]


def test_encoder_frozen_trains_the_head_only(tmp_path: Path, tiny_bert: Path,
                                             sink: RecordingSink) -> None:
    initial = load_file(tiny_bert / "model.safetensors")

    trained = _train(tmp_path, tiny_bert, {"encoder": True}, sink)

    backbone = {name: tensor for name, tensor in trained.items() if name.startswith("bert.")}
    assert all(torch.equal(initial[name.removeprefix("bert.")], tensor)
               for name, tensor in backbone.items())
    head_parameters = sum(tensor.numel() for name, tensor in trained.items()
                          if name.startswith("classifier."))
    assert sink.data_of("model_loaded")[0]["trainable_parameters"] == head_parameters


def test_without_freezing_everything_trains(tmp_path: Path, tiny_bert: Path,
                                            sink: RecordingSink) -> None:
    initial = load_file(tiny_bert / "model.safetensors")

    trained = _train(tmp_path, tiny_bert, {}, sink)

    assert not _same(initial, trained, EMBEDDINGS)
    loaded = sink.data_of("model_loaded")[0]
    assert loaded["trainable_parameters"] == loaded["total_parameters"]


def test_more_bottom_layers_than_the_model_has_is_invalid(tmp_path: Path, tiny_bert: Path,
                                                          sink: RecordingSink) -> None:
    with pytest.raises(InvalidSpec, match=r"bottom_layers is 3 but .* only 2 layers") as caught:
        _train(tmp_path, tiny_bert, {"bottom_layers": 3}, sink)

    assert caught.value.code == "invalid_spec"
    assert "at most 2" in caught.value.hint
