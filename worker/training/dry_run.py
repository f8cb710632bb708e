"""The dry run: what a job would read, build and cost, found without training it.

It goes through the job's own code up to the first step: `prepare_data`, `build_model` (the
tokenizer, the config checked against the task, the head, freeze and LoRA) and the task
recipe's tokenization. So its step count is the real job's for every task, and a dataset or
model that would fail the job fails the dry run with the same error code. The model is built
on the meta device: its shapes, never its weights.

Memory and time are estimates, and say so: memory adds weights (quantized ones at their
width), gradients, optimizer state (exact, from the trainable shapes; under FSDP each rank's
share of them, plus the blocks it gathers) and activations (a per-layer formula, at the
width of the precision in use, or only the layers' inputs under gradient checkpointing);
time divides the FLOPs of the tokens as the job batches them (padding included) by the
device's peak throughput (worker/training/hardware.py) times the
share of it that training reaches on this kind of device (MODEL_FLOPS_UTILIZATION, measured
with the job's telemetry).
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import re
import tempfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, List, Value
from torch import nn
from transformers import PretrainedConfig, PreTrainedTokenizerBase
from transformers.pytorch_utils import Conv1D
from transformers.trainer_pt_utils import get_length_grouped_indices

from app.jobs.spec import Hyperparameters, JobSpec
from app.jobs.tasks import columns_read
from worker.training.data import (
    DataFiles,
    PreparedData,
    model_length,
    prepare_data,
)
from worker.training.distributed import fsdp_units
from worker.training.errors import TrainingError
from worker.training.hardware import detect, peak_flops
from worker.training.labels import LABELS
from worker.training.model import BuiltModel, build_model
from worker.training.tasks import recipe_for
from worker.training.telemetry import matmul_weights

# A class with fewer training examples than this is barely learnt, and its scores are noise.
MIN_CLASS_EXAMPLES = 10
TRUNCATED_SHARE_WARNING = 0.4
TOKEN_SAMPLE_ROWS = 1000
# The share of the device's peak (hardware.peak_flops) that training reaches, in model FLOPs
# over the tokens batches hold, padding included: data loading, small kernels, the optimizer
# step and attention's own FLOPs take the rest. CPU: measured with the job's telemetry on the
# project's 2-core runner (README, "Dry run" under "Benchmark"). CUDA: no GPU run yet; 40%, what
# tuned fine-tuning recipes reach (NVIDIA NeMo's LoRA recipes, 40.7-42.8% MFU).
MODEL_FLOPS_UTILIZATION = {"cpu": 0.3, "cuda": 0.4}
# Bytes per quantized base weight (NF4 packs two in a byte; int8 one), as lora.quantization
# stores the frozen linear layers of the model's blocks; their block scales add about 3%.
QUANTIZED_WEIGHT_BYTES = {"4bit": 0.5, "8bit": 1.0}
# A module inside a block of a ModuleList ("encoder.layer.0.attention..."), as quantization.py
# chooses what to quantize.
_IN_A_BLOCK = re.compile(r"\.\d+\.")
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
    built = build_model(spec, model_source, prepared.label_names, load_weights=False,
                        train_rows=len(prepared.train))
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
    report["steps"] = training_steps(len(splits["train"]), hyper, spec.compute.gpus)

    counts = built.parameters
    report["parameters"] = {"total": counts.total, "trainable": counts.trainable,
                            "trainable_share": round(counts.trainable_share, 6),
                            "architecture": built.architecture, "lora": spec.lora is not None}
    device = device_capacity()
    report["memory"] = _memory_estimate(built, spec, int(feature_lengths.max()))
    if report["memory"]["total_bytes"] > device["memory_bytes"]:
        warnings.append(problem(
            "may_run_out_of_memory",
            f"training needs about {_gib(report['memory']['total_bytes'])} GiB, more than the "
            f"{_gib(device['memory_bytes'])} GiB of this worker's {device['name']}",
            "Lower batch_size or max_seq_length (raise gradient_accumulation_steps to keep the "
            "effective batch), freeze layers, use LoRA, or the adafactor optimizer."))
    report["time"] = _time_estimate(spec, built, feature_lengths, report["steps"])


def training_steps(train_rows: int, hyper: Hyperparameters, ranks: int) -> dict[str, Any]:
    """Optimizer steps as transformers' Trainer counts them (`set_initial_training_values`):
    one per `gradient_accumulation_steps` batches, a partial group at an epoch's end counting
    as one, and `max_steps`, when set, overriding the epochs. With several ranks, each takes
    an equal share of the rows (the distributed sampler repeats a few to even them out)."""
    batches = math.ceil(math.ceil(train_rows / ranks) / hyper.batch_size)
    per_epoch = max(math.ceil(batches / hyper.gradient_accumulation_steps), 1)
    total = (hyper.max_steps if hyper.max_steps is not None
             else math.ceil(hyper.epochs * per_epoch))
    warmup = hyper.warmup_steps or 0
    if hyper.warmup_ratio is not None:
        warmup = math.ceil(total * hyper.warmup_ratio)
    return {"train_features": train_rows, "batches_per_epoch": batches,
            "steps_per_epoch": per_epoch, "total_steps": total,
            "epochs": round(total / per_epoch, 4), "warmup_steps": warmup,
            "ranks": ranks,
            "effective_batch_size": hyper.batch_size * ranks * hyper.gradient_accumulation_steps}


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


def _memory_estimate(built: BuiltModel, spec: JobSpec, longest: int) -> dict[str, Any]:
    """Weights in fp32 (mixed precision keeps fp32 master weights) but for quantized ones;
    gradients and optimizer state in fp32; under autocast, the 16-bit copies of the weights
    that it casts for the step, and 16-bit activations."""
    model, config, hyper, compute = built.model, built.config, spec.hyperparameters, built.compute
    quantized = _quantized_weights(model) if _quantization(spec) else 0
    weights = sum(p.numel() for p in model.parameters()) - quantized
    trainable = [p for p in model.parameters() if p.requires_grad]
    autocast = compute.precision != "fp32"
    activation_width = 2 if autocast or _quantization(spec) else 4
    parts = {
        "weights_bytes": int(weights * 4
                             + quantized * QUANTIZED_WEIGHT_BYTES.get(_quantization(spec), 0)),
        "autocast_copies_bytes": 2 * matmul_weights(model).forward if autocast else 0,
        "gradients_bytes": 4 * sum(p.numel() for p in trainable),
        "optimizer_bytes": 4 * _optimizer_state(trainable, hyper.optimizer),
        "activations_bytes": _activations(model, config, hyper.batch_size, longest,
                                          activation_width, compute.gradient_checkpointing)}
    if compute.distributed == "fsdp":
        # Each rank keeps its share of the weights, gradients and optimizer state, and casts
        # only its share; it gathers a block whole at a time, and the next one ahead.
        for sharded in ("weights_bytes", "autocast_copies_bytes", "gradients_bytes",
                        "optimizer_bytes"):
            parts[sharded] = math.ceil(parts[sharded] / compute.ranks)
        parts["gathered_blocks_bytes"] = 2 * (2 if autocast else 4) * _largest_unit(model)
    # Per rank: what one device holds.
    return {**parts, "total_bytes": sum(parts.values()), "ranks": compute.ranks,
            "distributed": compute.distributed, "batch_size": hyper.batch_size,
            "sequence_length": longest, "optimizer": hyper.optimizer,
            "precision": compute.precision, "quantization": _quantization(spec),
            "gradient_checkpointing": compute.gradient_checkpointing, "estimate": True}


def _largest_unit(model: nn.Module) -> int:
    """Parameters of the largest of the blocks that FSDP gathers one at a time."""
    units = set(fsdp_units(model))
    return max((sum(p.numel() for p in module.parameters()) for module in model.modules()
                if type(module).__name__ in units), default=0)


def _quantization(spec: JobSpec) -> str | None:
    quantization = spec.lora.quantization if spec.lora is not None else "none"
    return None if quantization == "none" else quantization


def _quantized_weights(model: nn.Module) -> int:
    """The weights bitsandbytes quantizes (worker/training/quantization.py): the frozen
    linear layers inside the model's repeated blocks, found here on the meta device."""
    return sum(module.weight.numel() for name, module in model.named_modules()
               if isinstance(module, nn.Linear | Conv1D) and _IN_A_BLOCK.search(name)
               and not module.weight.requires_grad)


def _optimizer_state(trainable: list[nn.Parameter], optimizer: str) -> int:
    """Numbers of optimizer state, as the Trainer's optimizers keep them."""
    if optimizer == "adamw":  # exp_avg and exp_avg_sq, one each per parameter
        return 2 * sum(p.numel() for p in trainable)
    if optimizer == "adafactor":  # factored second moment, no first moment (beta1 None)
        return sum(math.prod(p.shape[:-1]) + math.prod((*p.shape[:-2], p.shape[-1]))
                   if p.dim() >= 2 else p.numel() for p in trainable)
    return 0  # sgd without momentum keeps nothing


def _activations(model: nn.Module, config: PretrainedConfig, batch: int, length: int,
                 width: int, checkpointed: bool) -> int:
    """Per layer b s h (34 + 5 a s / h) bytes at 16 bits, scaled to `width`; under gradient
    checkpointing, each layer's input (b s h values) and one layer's full set while its
    forward is recomputed. Plus the float32 logits and their gradient over the vocabulary for
    language-model heads."""
    hidden = getattr(config, "hidden_size", None)
    decoder_layers = (getattr(config, "num_decoder_layers", None)
                      or getattr(config, "decoder_layers", None) or 0)
    layers = (getattr(config, "num_hidden_layers", 0) or 0) + (
        decoder_layers if getattr(config, "is_encoder_decoder", False) else 0)
    heads = getattr(config, "num_attention_heads", None) or 1
    kept = 0.0
    if hidden:
        per_layer = batch * length * hidden * (
            _ACTIVATION_FACTOR + _ATTENTION_FACTOR * heads * length / hidden) * width / 2
        kept = (layers * batch * length * hidden * width + per_layer if checkpointed
                else layers * per_layer)
    get_output = getattr(model, "get_output_embeddings", None)
    logits = (2 * 4 * batch * length * getattr(config, "vocab_size", 0)
              if get_output is not None and get_output() is not None else 0)
    return int(kept + logits)


def _time_estimate(spec: JobSpec, built: BuiltModel, feature_lengths: np.ndarray,
                   steps: dict[str, Any]) -> dict[str, Any]:
    """The training FLOPs of the tokens the batches hold (telemetry.py's count: 6 N when
    everything trains, less under LoRA or freezing, plus a second forward under gradient
    checkpointing) over the device's peak times MODEL_FLOPS_UTILIZATION. Evaluations are
    not counted."""
    compute, hardware = built.compute, detect()
    padded = batched_tokens(feature_lengths, spec.hyperparameters.batch_size,
                            grouped=compute.length_grouping, packed=compute.packing,
                            seed=spec.hyperparameters.seed)
    flops = padded * matmul_weights(built.model).flops_per_token(
        recompute=compute.gradient_checkpointing)
    peak = peak_flops(hardware, "tf32" if compute.tf32 else compute.precision)
    utilization = MODEL_FLOPS_UTILIZATION[hardware.device]
    report: dict[str, Any] = {
        "device": hardware.device, "device_name": hardware.name,
        "precision": compute.precision, "flops_per_epoch": flops,
        "tokens_per_epoch": int(feature_lengths.sum()), "batched_tokens_per_epoch": padded,
        "peak_flops_per_second": peak, "utilization_assumed": utilization, "estimate": True}
    if peak is None:  # a GPU whose peak is not known: no figure rather than a guess
        return {**report, "seconds_per_epoch": None, "seconds_total": None}
    # GPUs share an epoch's work; CPU ranks share the same cores, which the peak already is.
    devices = spec.compute.gpus if hardware.device == "cuda" else 1
    per_epoch = flops / (peak * utilization * devices)
    epochs = steps["total_steps"] / steps["steps_per_epoch"]
    return {**report, "seconds_per_epoch": round(per_epoch, 3),
            "seconds_total": round(per_epoch * epochs, 3)}


def batched_tokens(lengths: np.ndarray, batch_size: int, *, grouped: bool, packed: bool,
                   seed: int) -> int:
    """Tokens per epoch with each batch padded to its longest row, the rows ordered as the
    Trainer's samplers order them (transformers' own length grouping where it is on); packed
    rows are not padded."""
    if packed or len(lengths) == 0:
        return int(lengths.sum())
    generator = torch.Generator().manual_seed(seed)
    order = (np.asarray(get_length_grouped_indices(lengths.tolist(), batch_size,
                                                   generator=generator)) if grouped
             else torch.randperm(len(lengths), generator=generator).numpy())
    ordered = lengths[order]
    return int(sum(batch.max() * len(batch)
                   for batch in np.array_split(ordered, range(batch_size, len(ordered),
                                                               batch_size))))


def _gib(size: int) -> str:
    return f"{size / 1024**3:.1f}"


@functools.cache
def device_capacity() -> dict[str, Any]:
    """This machine's training device and its memory; on a CPU, its matmul throughput is
    measured now too (hardware.peak_flops), so that no dry run pays for it.

    A GPU's memory is read in a child process: a CUDA context would hold GPU memory for as
    long as this process lives, memory that the jobs on this worker need.
    """
    hardware = detect()
    if hardware.device == "cpu":
        for precision in ("fp32", "bf16") if hardware.native_bf16 else ("fp32",):
            peak_flops(hardware, precision)
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    else:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
            memory = child.submit(_gpu_memory).result()
    return {"device": hardware.device, "name": hardware.name, "memory_bytes": memory}


def _gpu_memory() -> int:
    return int(torch.cuda.get_device_properties(0).total_memory)
