"""Run one fine-tuning job: data, model, Trainer, final evaluation, and the saved model folder.

`run_training` is the whole recipe; it knows nothing of the service around it. Progress and
cancellation come in as TrainerCallbacks, the rest goes out as events and the model folder.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from peft import PeftModel
from torch import nn
from transformers import (
    EvalPrediction,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    set_seed,
)
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.utils import logging as transformers_logging

from app.jobs.spec import JobSpec
from worker.training.best_model import BestModelKeeper
from worker.training.compute import ResolvedCompute, in_order_evaluation, packed_rows_collator
from worker.training.data import DataFiles, PreparedData, first_line, prepare_data
from worker.training.distributed import (
    full_state_dict,
    is_main_rank,
    is_sharded,
    rank,
    sharding_trainer,
    wait_for_all_ranks,
)
from worker.training.errors import OutOfMemory
from worker.training.events import EventSink
from worker.training.lora import save_adapter_and_merged
from worker.training.metrics import model_outputs
from worker.training.model import BuiltModel, load_model
from worker.training.tasks import Evaluated, TaskRecipe, recipe_for, with_derived_metrics
from worker.training.telemetry import Telemetry

# Final evaluations, by split, and the prefix the Trainer puts on their metrics.
EVALUATED_SPLITS = {"validation": "eval", "test": "test"}
MODEL_FOLDER = "model"


def run_training(spec: JobSpec, data: DataFiles, model_source: str, output_dir: Path, *,
                 events: EventSink, callbacks: Sequence[TrainerCallback] = (),
                 resume_from: Path | None = None) -> dict[str, Any]:
    """Fine-tune `model_source` as `spec` says and save it to `output_dir / "model"`.

    `resume_from` is a checkpoint folder to continue from: model, optimizer, scheduler, RNG
    state and data position, so the run ends as if it had never stopped.

    Returns the final metrics, as written to the model folder's metrics.json. Raises a
    TrainingError subclass for every failure a user can act on.
    """
    spec = spec.resolved()
    set_seed(spec.hyperparameters.seed)
    _quiet_progress_bars()
    # Each rank maps its data into its own cache: one rank must not delete another's.
    cache_dir = output_dir / ("cache" if is_main_rank() else f"cache-rank-{rank()}")
    try:
        recipe = recipe_for(spec)
        prepared = prepare_data(spec, data, cache_dir=cache_dir, events=events)
        built = load_model(spec, model_source, prepared.label_names, events=events,
                           train_rows=len(prepared.train))
        tokenizer, compute = built.tokenizer, built.compute
        splits = recipe.tokenize(prepared, tokenizer, spec)
        keeper = _best_model_keeper(spec, output_dir, events)
        telemetry = Telemetry(events)
        _divide_loss_by_accumulation_unless_the_model_does(built.model)
        trainer = sharding_trainer(in_order_evaluation(recipe.trainer_class))(
            model=built.model,
            args=training_arguments(spec, output_dir / "trainer", recipe, compute),
            train_dataset=splits["train"],
            eval_dataset=splits.get("validation"),
            processing_class=tokenizer,
            data_collator=(packed_rows_collator(compute) if compute.packing
                           else recipe.collator(tokenizer, spec)),
            compute_metrics=_metrics_of(recipe, spec, prepared, splits.get("validation"),
                                        tokenizer),
            # Derived metrics first: the callbacks after it see them in every evaluation.
            # Telemetry before the service's callbacks, which store what it adds to the logs.
            callbacks=[DerivedMetrics(recipe), telemetry, *callbacks,
                       *([keeper] if keeper else [])],
        )
        resume = str(resume_from) if resume_from is not None else None
        metrics: dict[str, Any] = dict(trainer.train(resume_from_checkpoint=resume).metrics)
        metrics |= telemetry.summary()
        if keeper is not None and (best := keeper.restore_best(trainer.model)) is not None:
            metrics["best_model"] = best
        for role, prefix in EVALUATED_SPLITS.items():
            if role in splits:
                trainer.compute_metrics = _metrics_of(recipe, spec, prepared, splits[role],
                                                      tokenizer)
                metrics |= _final_evaluation(trainer, spec, recipe, splits[role], role, prefix,
                                             prepared.label_names, events)
        metrics = json_safe(metrics)
        recipe.finish(trainer.model, spec)
        model_dir = output_dir / MODEL_FOLDER
        extra: dict[str, Any] = {}
        if recipe.samples is not None:
            # On every rank: a sharded model's forward gathers each layer from all of them.
            extra["samples.json"] = recipe.samples(trainer.model, tokenizer, prepared, spec)
            events.event("samples", f"what the model writes for "
                                    f"{len(extra['samples.json'])} held-out inputs",
                         {"samples": extra["samples.json"]})
        # Every rank sends its shards of a sharded model; the main rank gets them whole.
        weights = full_state_dict(trainer.model) if is_sharded(trainer.model) else None
        if is_main_rank():  # the ranks end with the same weights; one writes them
            _save_model_folder(trainer, built, model_dir, metrics,
                               _model_card(spec, recipe, prepared, metrics, compute), extra,
                               weights)
        wait_for_all_ranks()
    except (torch.OutOfMemoryError, MemoryError) as exc:
        where = "GPU" if isinstance(exc, torch.OutOfMemoryError) else "host"
        raise OutOfMemory(f"out of {where} memory: {first_line(exc)}") from exc
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    events.event("saved", f"saved the model to {model_dir}",
                 {"path": str(model_dir), "files": sorted(p.name for p in model_dir.iterdir())})
    return metrics


def _divide_loss_by_accumulation_unless_the_model_does(model: nn.Module) -> None:
    """Tell the Trainer whether the model's loss is already divided over the accumulated
    micro-batches.

    transformers 5 gives `num_items_in_batch` to every model whose forward takes **kwargs and
    then leaves its loss undivided by the accumulation steps, assuming the model divides by
    that count. Only some token-level losses do (a causal LM's); BERT's classification loss is
    a plain mean, so with accumulation its loss and gradients would come out
    `gradient_accumulation_steps` times too large, and gradient clipping would then cut them.
    """
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    own_loss = "self.loss_function(" in inspect.getsource(type(base).forward)
    base.accepts_loss_kwargs = own_loss and (
        "num_items_in_batch" in inspect.signature(base.loss_function).parameters)


def _best_model_keeper(spec: JobSpec, output_dir: Path,
                       events: EventSink) -> BestModelKeeper | None:
    metric = spec.evaluation.metric_for_best_model
    if not spec.evaluation.keep_best_model or metric is None:
        return None
    return BestModelKeeper(metric, spec.early_stopping, output_dir / "best", events)


class DerivedMetrics(TrainerCallback):
    """Adds the task's derived metrics (perplexity, say) to every evaluation's metrics."""

    def __init__(self, recipe: TaskRecipe) -> None:
        self.recipe = recipe

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    metrics: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if metrics is not None:
            metrics.update(with_derived_metrics(self.recipe, metrics, "eval"))


def _metrics_of(recipe: TaskRecipe, spec: JobSpec, prepared: PreparedData,
                split: datasets.Dataset | None,
                tokenizer: PreTrainedTokenizerBase) -> Callable[[EvalPrediction], Any] | None:
    """The compute_metrics of an evaluation of `split` (tokenized)."""
    if recipe.metrics is None or split is None:
        return None
    return recipe.metrics(Evaluated(spec, prepared.label_names, split, tokenizer))


def training_arguments(spec: JobSpec, checkpoints_dir: Path, recipe: TaskRecipe,
                       compute: ResolvedCompute) -> TrainingArguments:
    """The one place that turns the spec into TrainingArguments (of the task's class).

    A task without metrics keeps the loss and nothing else from an evaluation: a language
    model's logits over its whole vocabulary would fill the memory.
    """
    hyper = spec.hyperparameters
    # transformers 5 has no warmup_ratio: a warmup_steps below 1 is read as a ratio.
    warmup = hyper.warmup_ratio if hyper.warmup_ratio is not None else hyper.warmup_steps or 0
    return recipe.arguments_class(
        output_dir=str(checkpoints_dir),
        num_train_epochs=hyper.epochs,
        max_steps=hyper.max_steps if hyper.max_steps is not None else -1,
        learning_rate=hyper.learning_rate,
        per_device_train_batch_size=hyper.batch_size,
        per_device_eval_batch_size=hyper.eval_batch_size,
        gradient_accumulation_steps=hyper.gradient_accumulation_steps,
        warmup_steps=warmup,
        weight_decay=hyper.weight_decay,
        lr_scheduler_type=hyper.lr_scheduler,
        seed=hyper.seed,
        data_seed=hyper.seed,
        eval_strategy=spec.evaluation.strategy or "no",
        eval_steps=spec.evaluation.steps,
        logging_strategy="steps",
        logging_steps=spec.logging_steps,
        # Checkpoints every checkpoint_steps; without it the service saves them on a clock.
        save_strategy="steps" if spec.checkpoint_steps else "no",
        save_steps=spec.checkpoint_steps or 500,
        prediction_loss_only=recipe.metrics is None,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",  # telemetry's tokens/s and MFU
        **compute.training_arguments(),
        **recipe.arguments(spec),
    )


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities replaced by None: strict JSON has no such numbers."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _quiet_progress_bars() -> None:
    # Bars would fill a job's log (its trainer child's stdout and stderr) with every map and
    # epoch, and garble the events that the standalone mode prints to stderr as JSON lines.
    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()


def _final_evaluation(trainer: Trainer, spec: JobSpec, recipe: TaskRecipe,
                      dataset: datasets.Dataset, role: str, prefix: str, label_names: list[str],
                      events: EventSink) -> dict[str, Any]:
    # predict, not evaluate: evaluate would fire the service's on_evaluate callback, which
    # reports the mid-training evaluations, and this one would be reported twice.
    output = trainer.predict(dataset, metric_key_prefix=prefix)
    metrics = with_derived_metrics(recipe, dict(output.metrics or {}), prefix)
    if recipe.class_report is not None and output.label_ids is not None:
        metrics[f"{role}_per_class"] = recipe.class_report(
            model_outputs(output.predictions), np.asarray(output.label_ids), label_names, spec)
    metrics = json_safe(metrics)
    events.event("evaluated", f"final evaluation on the {role} data ({len(dataset)} rows)",
                 {"split": role, "metrics": metrics})
    return metrics


def _save_model_folder(trainer: Trainer, built: BuiltModel, model_dir: Path,
                       metrics: dict[str, Any], model_card: str, extra: dict[str, Any],
                       weights: dict[str, torch.Tensor] | None) -> None:
    """Write the whole folder beside `model_dir`, then rename it: never half a model.

    The model is saved in its base model's dtype, whatever it trained in. `weights`: a
    sharded model's, gathered whole (its own parameters are each rank's shards).
    """
    staging = model_dir.with_name(f".{model_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    if weights is not None:
        trainer.model.save_pretrained(str(staging), state_dict={
            name: tensor.to(built.base_dtype) for name, tensor in weights.items()})
        if trainer.processing_class is not None:
            trainer.processing_class.save_pretrained(str(staging))
    elif isinstance(trainer.model, PeftModel):
        merged = save_adapter_and_merged(trainer.model, staging)
        merged.to(built.base_dtype).save_pretrained(str(staging))
        if trainer.processing_class is not None:
            trainer.processing_class.save_pretrained(str(staging))
    else:
        trainer.model.to(built.base_dtype)
        trainer.save_model(str(staging))
    # The pickled TrainingArguments would make the folder unsafe to load; the JSON says it all.
    (staging / TRAINING_ARGS_NAME).unlink(missing_ok=True)
    (staging / "training_args.json").write_text(trainer.args.to_json_string(), encoding="utf-8")
    _write_json(staging / "trainer_state.json", dataclasses.asdict(trainer.state))
    _write_json(staging / "metrics.json", metrics)
    for name, content in extra.items():
        _write_json(staging / name, content)
    (staging / "README.md").write_text(model_card, encoding="utf-8")
    shutil.rmtree(model_dir, ignore_errors=True)
    staging.rename(model_dir)


def _write_json(path: Path, content: Any) -> None:
    path.write_text(json.dumps(json_safe(content), indent=2, sort_keys=True, allow_nan=False)
                    + "\n", encoding="utf-8")


def _model_card(spec: JobSpec, recipe: TaskRecipe, prepared: PreparedData,
                metrics: dict[str, Any], compute: ResolvedCompute) -> str:
    hyper = spec.hyperparameters
    rows = {role: len(dataset) for role, dataset in prepared.splits().items()}
    lines = [
        f"# {spec.name or spec.model + ' fine-tuned for ' + spec.task}",
        "",
        f"- Base model: `{spec.model}`",
        f"- Task: {spec.task}; load it with "
        + (f"`transformers.pipeline('{recipe.pipeline}', model=<this folder>)`"
           if recipe.pipeline else
           f"`transformers.{recipe.model_class.__name__}.from_pretrained(<this folder>)`"),
        f"- Rows: {', '.join(f'{count} {role}' for role, count in rows.items())}",
    ]
    if prepared.label_names:
        lines.append(f"- Labels: {', '.join(f'`{name}`' for name in prepared.label_names)}")
    frozen = spec.freeze.model_dump(exclude_defaults=True)
    if frozen:
        lines.append(f"- Frozen: {json.dumps(frozen)}")
    lines += ["", "## Hyperparameters", "", "| name | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in hyper.model_dump().items()
              if value is not None]
    lines += ["", "## Compute", "", "| setting | value | why |", "| --- | --- | --- |"]
    lines += [f"| {name} | {value} | {compute.reasons.get(name, '')} |"
              for name, value in compute.as_dict().items() if name != "reasons"]
    lines += ["", "## Final metrics", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {name} | {_format_number(value)} |" for name, value in sorted(metrics.items())
              if not isinstance(value, dict)]
    return "\n".join(lines) + "\n"


def _format_number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
