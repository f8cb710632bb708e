"""Telemetry on a real tiny Trainer run: every training log carries samples/s, tokens/s
without padding, peak memory and MFU; the final log and summary() cover the whole run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from tests.factories import sentiment_rows
from tests.training.helpers import RecordingSink
from worker.training.hardware import (
    Hardware,
    _measured_matmul_flops,
    cpu_matmul_flops,
    detect,
    gpu_peak_flops,
    peak_flops,
)
from worker.training.telemetry import Telemetry, matmul_weights

TELEMETRY_FIGURES = {"samples_per_second", "tokens_per_second", "peak_memory_bytes", "mfu"}


class LogRecorder(TrainerCallback):
    """Placed after Telemetry, as the service's reporter is: keeps what each log holds then."""

    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        self.logs.append(dict(logs or {}))


def _model(tiny_bert: Path) -> Any:
    return AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2)


def _train(tiny_bert: Path, tmp_path: Path, callbacks: list[TrainerCallback],
           rows: int = 48) -> tuple[Trainer, list[int]]:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    data = sentiment_rows(rows)
    encoded = tokenizer([row["text"] for row in data], truncation=True)
    labels = [int(row["label"] == "positive") for row in data]
    dataset = Dataset.from_dict({**encoded, "labels": labels})
    trainer = Trainer(
        model=_model(tiny_bert),
        args=TrainingArguments(
            output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_train_epochs=2,
            logging_steps=3, eval_strategy="epoch", save_strategy="no", report_to="none",
            disable_tqdm=True, use_cpu=True, include_num_input_tokens_seen="non_padding"),
        train_dataset=dataset, eval_dataset=dataset.select(range(16)),
        data_collator=DataCollatorWithPadding(tokenizer), callbacks=callbacks)
    trainer.train()
    return trainer, [len(ids) for ids in encoded["input_ids"]]


def test_every_training_log_carries_the_figures(tiny_bert: Path, tmp_path: Path) -> None:
    sink, recorder = RecordingSink(), LogRecorder()
    telemetry = Telemetry(sink)
    trainer, lengths = _train(tiny_bert, tmp_path, [telemetry, recorder])

    training = [logs for logs in recorder.logs if "loss" in logs]
    evaluations = [logs for logs in recorder.logs if "eval_loss" in logs]
    [final] = [logs for logs in recorder.logs if "train_loss" in logs]
    assert len(training) == 4 and len(evaluations) == 2  # 12 steps, a log every 3
    for logs in training:
        assert TELEMETRY_FIGURES <= logs.keys(), logs
        assert logs["samples_per_second"] > 0 and logs["tokens_per_second"] > 0
        assert 0 < logs["mfu"] < 1
        # The Trainer's own running speed (evaluations included) gives way to the telemetry's.
        assert "train_runtime" not in logs and "train_tokens_per_second" not in logs
    assert all(not TELEMETRY_FIGURES & logs.keys() for logs in evaluations)
    assert TELEMETRY_FIGURES <= final.keys()

    # Tokens without padding: what the rows hold, twice (two epochs), not padded batches.
    assert trainer.state.num_input_tokens_seen == 2 * sum(lengths)
    summary = telemetry.summary()
    hardware = detect()
    assert summary["device"] == "cpu" and summary["device_name"] == hardware.name
    assert summary["precision"] == "fp32" and summary["peak_flops"] == cpu_matmul_flops("fp32")
    seconds = 2 * sum(lengths) / summary["tokens_per_second"]
    assert summary["samples_per_second"] * seconds == pytest.approx(2 * 48, rel=1e-3)
    assert seconds < trainer.state.log_history[-1]["train_runtime"]  # evaluations left out
    assert summary["peak_memory_bytes"] >= 50 * 2**20  # torch and transformers at least
    weights = matmul_weights(trainer.model)
    assert summary["mfu"] == pytest.approx(
        6 * weights.forward * summary["tokens_per_second"] / summary["peak_flops"], rel=1e-2)

    [(_, message, data)] = [event for event in sink.events if event[0] == "telemetry"]
    assert data == {"device": "cpu", "device_name": hardware.name, "precision": "fp32",
                    "peak_flops": summary["peak_flops"],
                    "flops_per_token": 6 * weights.forward}
    assert hardware.name in message


def test_flops_per_token_follow_what_trains(tiny_bert: Path) -> None:
    full = matmul_weights(_model(tiny_bert))
    assert full.forward == full.crossed == full.trainable > 0
    assert full.flops_per_token() == 6 * full.forward
    assert full.flops_per_token(recompute=True) == 8 * full.forward

    model = _model(tiny_bert)
    for parameter in model.bert.parameters():  # only the head trains: nothing to cross
        parameter.requires_grad = False
    head_only = matmul_weights(model)
    head = model.classifier.weight.numel()
    assert (head_only.forward, head_only.crossed, head_only.trainable) == (
        full.forward, head, head)

    lora = matmul_weights(get_peft_model(_model(tiny_bert), LoraConfig(
        r=2, target_modules=["query", "value"], task_type="SEQ_CLS")))
    # Adapters in the first layer: the gradient crosses every layer, few weights train.
    assert lora.crossed > 0.9 * lora.forward and lora.trainable < lora.forward / 4
    assert 3.5 * lora.forward < lora.flops_per_token() < 4.5 * lora.forward  # not 6N


@pytest.mark.parametrize(("name", "precision", "tflops"), [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4), ("NVIDIA H100 PCIe", "bf16", 756),
    ("NVIDIA H200", "bf16", 989.4), ("NVIDIA A100-SXM4-80GB", "tf32", 156),
    ("NVIDIA A100 80GB PCIe", "fp32", 19.5), ("NVIDIA L4", "bf16", 121),
    ("NVIDIA A10G", "bf16", 125), ("Tesla T4", "fp16", 65), ("Tesla T4", "bf16", None),
    ("Tesla V100-SXM2-16GB", "fp16", 125), ("NVIDIA GeForce RTX 4090", "bf16", 165.2),
    ("NVIDIA GeForce RTX 3090", "bf16", 71), ("Some Future GPU", "bf16", None),
])
def test_known_gpu_peaks(name: str, precision: str, tflops: float | None) -> None:
    peak = gpu_peak_flops(name, precision)
    assert (peak / 1e12 if peak else None) == (pytest.approx(tflops) if tflops else None)
    gpu = Hardware(device="cuda", name=name, native_bf16=True, tf32=True)
    assert peak_flops(gpu, precision) == peak


def test_the_cpu_is_measured_once_and_quickly() -> None:
    _measured_matmul_flops.cache_clear()
    started = time.perf_counter()
    measured = cpu_matmul_flops("fp32")
    assert time.perf_counter() - started < 1.0
    assert 1e8 < measured < 1e14
    assert cpu_matmul_flops("fp32") is measured
    assert peak_flops(detect(), "tf32") == measured  # no TF32 on a CPU: fp32's figure
