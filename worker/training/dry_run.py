"""The dry run: what a job would read, build and cost, found without training it.

It goes through the job's own code up to the first step: `prepare_data`, `build_model` (the
tokenizer, the config checked against the task, the head, freeze and LoRA) and the task
recipe's tokenization. So its step count is the real job's for every task, and a dataset or
model that would fail the job fails the dry run with the same error code. The model is built
on the meta device: its shapes, never its weights.

Memory and time are estimates, and say so: memory adds weights, gradients, optimizer state
(exact, from the trainable shapes) and activations (a per-layer formula); time divides a FLOPs
count by a matrix-multiply throughput measured once on this machine.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, List, Value
from torch import nn
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from app.jobs.spec import Hyperparameters, JobSpec
from app.jobs.tasks import columns_read
from worker.training.data import (
    DataFiles,
    PreparedData,
    model_length,
    prepare_data,
)
from worker.training.errors import TrainingError
from worker.training.labels import LABELS
from worker.training.model import BuiltModel, build_model
from worker.training.tasks import recipe_for

# A class with fewer training examples than this is barely learnt, and its scores are noise.
MIN_CLASS_EXAMPLES = 10
TRUNCATED_SHARE_WARNING = 0.4
TOKEN_SAMPLE_ROWS = 1000
# The share of a device's matmul throughput that training reaches: data loading, small
# kernels, the optimizer step and the attention's own FLOPs take the rest.
MODEL_FLOPS_UTILIZATION = 0.4
# Activation bytes per layer per token, over hidden size, at 16 bits (Korthikanti et al.,
# "Reducing Activation Recomputation in Large Transformer Models", 2022): 34 + 5 a s / h.
_ACTIVATION_FACTOR, _ATTENTION_FACTOR = 34, 5


class _Unreported:
    """The EventSink of the job's steps in a dry run, whose findings go into its report."""

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        pass


def problem(code: str, message: str, hint: str | None = None) -> dict[str, str]:
    return {"code": code, "message": message, **({"hint": hint} if hint else {})}


def dry_run(spec: JobSpec, data_files: DataFiles, model_source: str) -> dict[str, Any]:
    """The report of a job that is not run: dataset, tokens, steps, parameters, memory, time,
    and the errors and warnings found on the way."""
    spec = spec.resolved()
    report: dict[str, Any] = {"spec": spec.model_dump(mode="json"), "errors": [],
                              "warnings": []}
    with tempfile.TemporaryDirectory(prefix="dry-run-") as cache_dir:
        try:
            _inspect(spec, data_files, model_source, Path(cache_dir), report)
        except TrainingError as exc:
            report["errors"].append(problem(exc.code, exc.message, exc.hint))
    report["valid"] = not report["errors"]
    return report


def failed(spec: JobSpec, error: TrainingError) -> dict[str, Any]:
    """The report of a dry run that `error` stopped before it began."""
    return {"spec": spec.resolved().model_dump(mode="json"), "valid": False, "warnings": [],
            "errors": [problem(error.code, error.message, error.hint)]}


def _inspect(spec: JobSpec, data_files: DataFiles, model_source: str, cache_dir: Path,
             report: dict[str, Any]) -> None:
    """Fill `report` section by section, as far as the job would get."""
    recipe, hyper, warnings = recipe_for(spec), spec.hyperparameters, report["warnings"]
    prepared = prepare_data(spec, data_files, cache_dir=cache_dir, events=_Unreported())
    report["dataset"] = _dataset_report(spec, prepared)
    warnings.extend(_dataset_warnings(report["dataset"]))

    # In the job's order, so that a spec with two faults fails here as the job would.
    built = build_model(spec, model_source, prepared.label_names, load_weights=False)
    tokenizer = built.tokenizer
    recipe.collator(tokenizer, spec)  # a collator refuses a tokenizer it cannot batch with
    limit = model_length(tokenizer, hyper.max_seq_length)
    # Exactly as run_training tokenizes: that is what makes the step count the job's.
    splits = recipe.tokenize(prepared, tokenizer, spec)
    feature_lengths = np.array([len(ids) for ids in splits["train"]["input_ids"]])
    report["tokens"] = _token_report(spec, prepared.train, tokenizer, limit, feature_lengths)
    if (report["tokens"]["truncated_share"] or 0) >= TRUNCATED_SHARE_WARNING:
        warnings.append(problem(
            "many_rows_truncated",
            f"{report['tokens']['truncated_share']:.0%} of the sampled rows are longer than "
            f"{limit} tokens and lose their end",
            f"Raise hyperparameters.max_seq_length (the model takes up to "
            f"{tokenizer.model_max_length if tokenizer.model_max_length < 10**6 else 'any'}), "
            "or shorten the texts."))
    report["steps"] = training_steps(len(splits["train"]), hyper)

    counts = built.parameters
    report["parameters"] = {"total": counts.total, "trainable": counts.trainable,
                            "trainable_share": round(counts.trainable_share, 6),
                            "architecture": built.architecture, "lora": spec.lora is not None}
    device = device_capacity()
    report["memory"] = _memory_estimate(built, hyper, int(feature_lengths.max()))
    if report["memory"]["total_bytes"] > device["memory_bytes"]:
        warnings.append(problem(
            "may_run_out_of_memory",
            f"training needs about {_gib(report['memory']['total_bytes'])} GiB, more than the "
            f"{_gib(device['memory_bytes'])} GiB of this worker's {device['device']}",
            "Lower batch_size or max_seq_length (raise gradient_accumulation_steps to keep the "
            "effective batch), freeze layers, use LoRA, or the adafactor optimizer."))
    report["time"] = _time_estimate(spec, counts.total, counts.trainable,
                                    int(feature_lengths.sum()), report["steps"], device)


def training_steps(train_rows: int, hyper: Hyperparameters) -> dict[str, Any]:
    """Optimizer steps as transformers' Trainer counts them (`set_initial_training_values`):
    one per `gradient_accumulation_steps` batches, a partial group at an epoch's end counting
    as one, and `max_steps`, when set, overriding the epochs."""
    batches = math.ceil(train_rows / hyper.batch_size)
    per_epoch = max(math.ceil(batches / hyper.gradient_accumulation_steps), 1)
    total = (hyper.max_steps if hyper.max_steps is not None
             else math.ceil(hyper.epochs * per_epoch))
    warmup = hyper.warmup_steps or 0
    if hyper.warmup_ratio is not None:
        warmup = math.ceil(total * hyper.warmup_ratio)
    return {"train_features": train_rows, "batches_per_epoch": batches,
            "steps_per_epoch": per_epoch, "total_steps": total,
            "epochs": round(total / per_epoch, 4), "warmup_steps": warmup,
            "effective_batch_size": hyper.batch_size * hyper.gradient_accumulation_steps}


def _dataset_report(spec: JobSpec, prepared: PreparedData) -> dict[str, Any]:
    splits = prepared.splits()
    held_out = {"validation": spec.dataset.validation_split, "test": spec.dataset.test_split}
    usable = {role: len(dataset) for role, dataset in splits.items()
              if role == "train" or not held_out[role]}
    usable["train"] += sum(len(splits[role]) for role, share in held_out.items() if share)
    files = {role: {"rows_read": usable[role] + dropped, "rows_dropped": dropped,
                    "rows_usable": usable[role]}
             for role, dropped in prepared.dropped_rows.items()}
    return {"files": files, "splits": {role: len(dataset) for role, dataset in splits.items()},
            "label_names": prepared.label_names,
            "label_distribution": {role: _label_counts(spec, dataset, prepared.label_names)
                                   for role, dataset in splits.items()},
            "columns": {"needed": {column.field: column.name
                                    for column in columns_read(spec)}}}


def _label_counts(spec: JobSpec, dataset: Dataset, names: list[str]) -> dict[str, int] | None:
    if not names or LABELS not in dataset.column_names:
        return None
    labels = dataset[LABELS]
    if spec.dataset.multi_label:
        totals = np.asarray(labels, dtype=float).sum(axis=0)
        return {name: int(count) for name, count in zip(names, totals, strict=True)}
    counted = Counter(label for row in labels
                      for label in (row if isinstance(row, list) else [row]))
    return {name: counted.get(index, 0) for index, name in enumerate(names)}


def _dataset_warnings(dataset: dict[str, Any]) -> list[dict[str, str]]:
    warnings = []
    train_counts = dataset["label_distribution"]["train"] or {}
    rare = {name: count for name, count in train_counts.items() if count < MIN_CLASS_EXAMPLES}
    if rare:
        listed = ", ".join(f"'{name}' ({count})" for name, count in rare.items())
        warnings.append(problem(
            "rare_class", f"classes with fewer than {MIN_CLASS_EXAMPLES} training examples: "
                          f"{listed}",
            "Add examples of these classes, merge them into others, or drop their rows."))
    splits = dataset["splits"]
    if splits.get("validation", 0) > splits["train"]:
        warnings.append(problem(
            "validation_larger_than_train",
            f"the validation data ({splits['validation']} rows) is larger than the training "
            f"data ({splits['train']} rows)",
            "Lower dataset.validation_split, or move rows from validation to train."))
    return warnings


def _token_report(spec: JobSpec, train: Dataset, tokenizer: PreTrainedTokenizerBase,
                  limit: int, feature_lengths: np.ndarray) -> dict[str, Any]:
    """Lengths before truncation on a sample of rows, and what the model is fed."""
    sample = train.shuffle(seed=spec.hyperparameters.seed).select(
        range(min(TOKEN_SAMPLE_ROWS, len(train))))
    lengths = _untruncated_lengths(spec, sample, tokenizer)
    # Packed language modelling cuts its token stream into blocks: nothing is truncated.
    packed = recipe_for(spec).packs_tokens(spec)
    return {"sample_rows": len(sample), "max_seq_length": limit,
            "rows": _stats(lengths) if lengths is not None else None,
            "truncated_share": (None if lengths is None
                                else 0.0 if packed else round(float((lengths > limit).mean()), 4)),
            "features": _stats(feature_lengths), "tokens_per_epoch": int(feature_lengths.sum())}


def _untruncated_lengths(spec: JobSpec, sample: Dataset,
                         tokenizer: PreTrainedTokenizerBase) -> np.ndarray | None:
    """Tokens per row over the first two text columns the task reads, as a pair; lists of
    words are tokenized as words. None when the task reads no text column."""
    columns = [column.name for column in columns_read(spec)
               if column.field != "label_column" and _is_text(sample.features.get(column.name))]
    if not columns or len(sample) == 0:
        return None
    words = isinstance(sample.features[columns[0]], List)
    texts = [[str(word) for word in row] if words else row for row in sample[columns[0]]]
    pairs = list(sample[columns[1]]) if len(columns) > 1 and not words else None
    encoded = tokenizer(texts, pairs, truncation=False, is_split_into_words=words,
                        verbose=False)["input_ids"]
    return np.array([len(ids) for ids in encoded])


def _is_text(feature: Any) -> bool:
    if isinstance(feature, List):
        feature = feature.feature
    return isinstance(feature, Value) and feature.dtype in ("string", "large_string")


def _stats(lengths: np.ndarray) -> dict[str, float]:
    return {"mean": round(float(lengths.mean()), 2), "p95": float(np.percentile(lengths, 95)),
            "max": int(lengths.max())}


def _memory_estimate(built: BuiltModel, hyper: Hyperparameters, longest: int) -> dict[str, Any]:
    model, config, counts = built.model, built.config, built.parameters
    dtype = getattr(config, "dtype", None)
    width = dtype.itemsize if isinstance(dtype, torch.dtype) else 4
    trainable = [p for p in model.parameters() if p.requires_grad]
    parts = {"weights_bytes": counts.total * width, "gradients_bytes": counts.trainable * width,
             "optimizer_bytes": _optimizer_state(trainable, hyper.optimizer) * width,
             "activations_bytes": _activations(model, config, hyper.batch_size, longest, width)}
    return {**parts, "total_bytes": sum(parts.values()), "batch_size": hyper.batch_size,
            "sequence_length": longest, "optimizer": hyper.optimizer, "estimate": True}


def _optimizer_state(trainable: list[nn.Parameter], optimizer: str) -> int:
    """Numbers of optimizer state, as the Trainer's optimizers keep them."""
    if optimizer == "adamw":  # exp_avg and exp_avg_sq, one each per parameter
        return 2 * sum(p.numel() for p in trainable)
    if optimizer == "adafactor":  # factored second moment, no first moment (beta1 None)
        return sum(math.prod(p.shape[:-1]) + math.prod((*p.shape[:-2], p.shape[-1]))
                   if p.dim() >= 2 else p.numel() for p in trainable)
    return 0  # sgd without momentum keeps nothing


def _activations(model: nn.Module, config: PretrainedConfig, batch: int, length: int,
                 width: int) -> int:
    """Per layer b s h (34 + 5 a s / h) bytes at 16 bits, scaled to `width`; plus the
    float32 logits and their gradient over the vocabulary for language-model heads."""
    hidden = getattr(config, "hidden_size", None)
    decoder_layers = (getattr(config, "num_decoder_layers", None)
                      or getattr(config, "decoder_layers", None) or 0)
    layers = (getattr(config, "num_hidden_layers", 0) or 0) + (
        decoder_layers if getattr(config, "is_encoder_decoder", False) else 0)
    heads = getattr(config, "num_attention_heads", None) or 1
    per_layer = 0.0
    if hidden:
        per_layer = batch * length * hidden * (
            _ACTIVATION_FACTOR + _ATTENTION_FACTOR * heads * length / hidden) * width / 2
    get_output = getattr(model, "get_output_embeddings", None)
    logits = (2 * 4 * batch * length * getattr(config, "vocab_size", 0)
              if get_output is not None and get_output() is not None else 0)
    return int(layers * per_layer + logits)


def _time_estimate(spec: JobSpec, total: int, trainable: int, tokens: int,
                   steps: dict[str, Any], device: dict[str, Any]) -> dict[str, Any]:
    """2 N FLOPs per token forward; backward 2 N through the layers gradients must cross
    (all with LoRA, the trainable part with freeze) and 2 N for the trainable weights: the
    classic 6 N when everything trains. Attention's own FLOPs are left out."""
    crossed = total if spec.lora is not None else trainable
    flops = tokens * (2 * total + 2 * crossed + 2 * trainable)
    per_epoch = flops / (device["flops_per_second"] * MODEL_FLOPS_UTILIZATION)
    epochs = steps["total_steps"] / steps["steps_per_epoch"]
    return {"device": device["device"], "flops_per_epoch": flops,
            "seconds_per_epoch": round(per_epoch, 3),
            "seconds_total": round(per_epoch * epochs, 3),
            "measured_flops_per_second": device["flops_per_second"],
            "utilization_assumed": MODEL_FLOPS_UTILIZATION, "estimate": True}


def _gib(size: int) -> str:
    return f"{size / 1024**3:.1f}"


@functools.cache
def device_capacity() -> dict[str, Any]:
    """This machine's training device, its memory and matmul FLOP/s, measured once.

    A GPU is measured in a child process: a CUDA context would hold GPU memory for as long as
    this process lives, memory that the jobs on this worker need.
    """
    if not torch.cuda.is_available():
        return _measure("cpu")
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        return child.submit(_measure, "cuda").result()


def _measure(device: str) -> dict[str, Any]:
    size = 4096 if device == "cuda" else 1024
    left, right = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    left @ right  # the first call pays for kernel selection
    runs, started = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - started < 0.25:
        left @ right
        if device == "cuda":
            torch.cuda.synchronize()
        runs += 1
    elapsed = time.perf_counter() - started
    if device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        name, memory = properties.name, properties.total_memory
    else:
        name, memory = "cpu", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"device": name, "memory_bytes": memory,
            "flops_per_second": 2 * size**3 * runs / elapsed}
