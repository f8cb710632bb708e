"""QLoRA: LoRA on a base loaded 4-bit or 8-bit with bitsandbytes, on this CPU.

The base trains quantized and frozen; the saved merged model is the adapter merged into the
base reloaded unquantized, so it must agree with the adapter on the unquantized base.
"""

from __future__ import annotations

import json
import shutil
import subprocess  # nosec B404
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from tests.factories import sentiment_rows, write_rows
from tests.training.helpers import RecordingSink, data_files, make_spec
from worker.training.dry_run import dry_run
from worker.training.errors import QuantizationUnavailable
from worker.training.model import build_model
from worker.training.trainer import run_training

ROOT = Path(__file__).resolve().parents[2]
# The tiny BERT's blocks: query, key, value, attention output, intermediate and output.
LINEAR_LAYERS_PER_BLOCK = 6


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_qlora_trains_and_its_adapter_and_merged_model_agree(
        quantization: str, tmp_path: Path, tiny_bert: Path, sink: RecordingSink) -> None:
    train = write_rows(tmp_path / "train.csv", sentiment_rows(200))
    spec = make_spec(dataset={"validation_split": 0.2},
                     hyperparameters={"epochs": 5, "learning_rate": 1e-2},
                     lora={"r": 4, "alpha": 8, "quantization": quantization})

    metrics = run_training(spec, data_files(train), str(tiny_bert), tmp_path / "out",
                           events=sink)

    # It learned the cue words through a quantized base (a chance model sits at 0.5).
    assert metrics["eval_accuracy"] >= 0.85
    [loaded] = sink.data_of("model_loaded")
    # The real parameter count, 4-bit weights unpacked: the unquantized model's, with LoRA.
    unquantized = build_model(make_spec(lora={"r": 4, "alpha": 8}), str(tiny_bert),
                              ["negative", "positive"], load_weights=False).parameters
    assert (loaded["total_parameters"], loaded["trainable_parameters"]) == (
        unquantized.total, unquantized.trainable)
    assert 0 < loaded["trainable_share"] < 0.5

    model_dir = tmp_path / "out" / "model"
    assert "quantization_config" not in json.loads((model_dir / "config.json").read_text())
    merged = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    base = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=2, id2label=merged.config.id2label,
        label2id=merged.config.label2id)
    # Merged into the unquantized weights: each adapted weight moved by the low-rank update
    # only. A merge into dequantized 4-bit or 8-bit weights would carry the rounding of every
    # weight, a full-rank difference.
    query = "bert.encoder.layer.0.attention.self.query.weight"
    moved = merged.state_dict()[query] - base.state_dict()[query]
    assert 0 < int(torch.linalg.matrix_rank(moved)) <= 4

    adapted = PeftModel.from_pretrained(base, model_dir / "adapter").eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = tokenizer(["a great and lovely film", "an awful boring plot"], padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        # The same fp32 sums in another order (W + BA against Wx + BAx): float rounding only,
        # as for LoRA without quantization.
        assert torch.allclose(merged(**batch).logits, adapted(**batch).logits, atol=1e-4)
    classify = pipeline("text-classification", model=str(model_dir))
    held_out = sentiment_rows(20, seed=9)
    predicted = classify([row["text"] for row in held_out])
    right = sum(p["label"] == row["label"] for p, row in zip(predicted, held_out, strict=True))
    # The merged model is the trained one on a slightly different (unquantized) base.
    assert right >= 14


def test_a_model_with_nothing_to_quantize_is_refused_by_the_dry_run_and_the_job(
        tmp_path: Path, tiny_bert: Path, sink: RecordingSink) -> None:
    # A BERT without blocks: its only linear layers are the pooler and the head.
    flat = shutil.copytree(tiny_bert, tmp_path / "flat-bert")
    config = json.loads((flat / "config.json").read_text())
    (flat / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 0}))
    files = data_files(write_rows(tmp_path / "train.csv", sentiment_rows(20)))
    spec = make_spec(lora={"quantization": "8bit"})

    [error] = dry_run(spec, files, str(flat))["errors"]
    assert error["code"] == "quantization_unavailable"
    assert "no linear layers in repeated blocks" in error["message"]
    assert "lora.quantization to 'none'" in error["hint"]
    with pytest.raises(QuantizationUnavailable, match="no linear layers in repeated blocks"):
        run_training(spec, files, str(flat), tmp_path / "out", events=sink)


_WITHOUT_BITSANDBYTES = """
import json, sys
sys.modules["bitsandbytes"] = None  # what importing a package that is not installed meets
from pathlib import Path
from tests.training.helpers import RecordingSink, data_files, make_spec
from worker.training.data import DataFile, format_from_suffix
from worker.training.dry_run import dry_run
from worker.training.errors import TrainingError
from worker.training.trainer import run_training

model, train, out = sys.argv[1:]
spec = make_spec(lora={"quantization": "4bit"})
files = data_files(Path(train))
answer = {"dry_run": dry_run(spec, files, model)["errors"]}
try:
    run_training(spec, files, model, Path(out), events=RecordingSink())
except TrainingError as exc:
    answer["job"] = {"code": exc.code, "message": exc.message, "hint": exc.hint}
print(json.dumps(answer))
"""


def test_a_worker_without_bitsandbytes_refuses_before_loading(tmp_path: Path,
                                                              tiny_bert: Path) -> None:
    train = write_rows(tmp_path / "train.csv", sentiment_rows(20))
    done = subprocess.run(  # nosec B603
        [sys.executable, "-c", _WITHOUT_BITSANDBYTES, str(tiny_bert), str(train),
         str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)

    answer = json.loads(done.stdout.strip().splitlines()[-1])
    [dry_run_error] = answer["dry_run"]
    for error in (dry_run_error, answer["job"]):
        assert error["code"] == "quantization_unavailable"
        assert "bitsandbytes is not installed" in error["message"]
        assert "lora.quantization to 'none'" in error["hint"]
    assert not (tmp_path / "out" / "model").exists()
