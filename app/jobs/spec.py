"""JobSpec: the fine-tuning job spec, validated once by the API and read back by the worker.

Every field but `task`, `model` and `dataset.train` (or `dataset.hub`) has a default, and
`resolved()` fills the defaults that depend on other fields, so that the stored spec says
exactly what will run. Unknown fields are refused: a typo must not silently do nothing.

The API validates a spec strictly, once, when it is submitted (`JobSpec.model_validate`, the
request body). A job stores it with its SPEC_VERSION, and the worker reads it back with
`JobSpec.from_stored`: upgraded to this release's version, leniently (a field removed since is
ignored, the cross-field rules are not run again, so that a rule tightened since does not fail
a job queued before), and typed all the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from app.jobs.dataset_spec import DatasetSpec, HubDataset
from app.jobs.run_spec import (
    Compute,
    EarlyStopping,
    Evaluation,
    Freeze,
    Hyperparameters,
    Lora,
)
from app.jobs.spec_base import STORED, SpecError, Strict, reading_stored
from app.jobs.tasks import DECLARATIONS, TASK_FIELDS, TASK_NAMES

# The sections are importable from here, where the spec is.
__all__ = ["SPEC_VERSION", "Compute", "DatasetSpec", "EarlyStopping", "Evaluation", "Freeze",
           "HubDataset", "Hyperparameters", "JobSpec", "Lora", "SpecError"]

# The declared tasks (app/jobs/tasks/), in their order.
Task = Literal[TASK_NAMES]  # type: ignore[valid-type]

# A catalog name or a Hub id: path segments of letters, digits, '-', '_', '.', never '..',
# never absolute, never a URL.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


# The version of the stored spec, kept beside it on the job. A release that changes what a
# stored spec means (a field renamed or re-meant, a new field whose default would change what
# an older spec runs, a field's bounds narrowed) raises it and adds the step from the previous
# version to _UPGRADES. A field removed or added with a neutral default, or a cross-field rule
# tightened, needs no step: from_stored ignores unknown fields and does not run those rules.
SPEC_VERSION = 3


def _same_fields(spec: dict[str, Any]) -> dict[str, Any]:
    return spec


def _trained_as_before_compute(spec: dict[str, Any]) -> dict[str, Any]:
    # Before the compute section, every job trained in fp32 without length grouping or
    # packing; a job queued then runs as it was submitted.
    return {**spec, "compute": {"precision": "fp32", "length_grouping": False,
                                "packing": False}}


# How a stored spec of version N becomes one of version N + 1, by N.
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    # Version 1: specs stored before their version was; version 2 has the same fields.
    1: _same_fields,
    2: _trained_as_before_compute,
}


class JobSpec(Strict):
    task: Task
    model: str = Field(min_length=1, max_length=200,
                       description="Catalog name or Hugging Face Hub id")
    dataset: DatasetSpec
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    freeze: Freeze = Field(default_factory=Freeze)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    compute: Compute = Field(default_factory=Compute)
    lora: Lora | None = Field(
        default=None, description="Train low-rank adapters (LoRA) instead of the whole "
                                  "backbone; the task head still trains")
    early_stopping: EarlyStopping | None = Field(
        default=None, description="Stop when evaluation.metric_for_best_model stops improving; "
                                  "the final model is then the best one")
    logging_steps: int = Field(default=10, ge=1, le=1_000_000)
    name: str | None = Field(default=None, max_length=200)
    max_attempts: int = Field(default=3, ge=1, le=100,
                              description="Starts of the trainer before the job fails (crashes, "
                                          "lost workers); capped by the server. Out-of-memory "
                                          "attempts shrink the batch instead and do not count")
    checkpoint_steps: int | None = Field(
        default=None, ge=1, le=10_000_000,
        description="Save a checkpoint every N steps; default: every FT_CHECKPOINT_SECONDS")
    max_runtime_seconds: int | None = Field(
        default=None, ge=1, le=10**8,
        description="Training time, over all attempts, before the job fails with 'timeout'; "
                    "default and cap: FT_MAX_JOB_SECONDS")
    max_queue_seconds: int | None = Field(
        default=None, ge=1, le=10**8,
        description="Time the job may wait in the queue before it fails with 'queue_timeout'")

    @classmethod
    def from_stored(cls, data: dict[str, Any], version: int) -> JobSpec:
        """The spec a job stored at `version`, as this release reads it: upgraded step by
        step, with the fields it no longer knows ignored and the cross-field rules not run
        again (the API ran them when the spec was submitted; a later release may tighten
        them). Each field's type, bounds and format still apply."""
        if version > SPEC_VERSION:
            raise ValueError(f"the spec was stored at version {version}, newer than this "
                             f"release reads ({SPEC_VERSION}); run it on an up-to-date worker")
        for older in range(version, SPEC_VERSION):
            data = _UPGRADES[older](data)
        return cls.model_validate(data, context={STORED: True})

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("a name cannot contain NUL characters")
        return value

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        if not _MODEL_NAME.match(value) or ".." in value:
            raise ValueError("a model name is a catalog name or a Hub id such as "
                             "'bert-base-uncased' or 'org/model'; paths and URLs are not accepted")
        return value

    @model_validator(mode="after")
    def _evaluation_needs_data(self, info: ValidationInfo) -> JobSpec:
        if reading_stored(info):
            return self
        wants_eval = self.evaluation.strategy not in (None, "no")
        if wants_eval and not self.dataset.has_validation:
            raise SpecError("evaluation needs validation data: set dataset.validation or "
                            "dataset.validation_split, or evaluation.strategy 'no'",
                            "evaluation.strategy")
        wants_best = self.early_stopping is not None or self.evaluation.keep_best_model
        if wants_best and (self.evaluation.strategy == "no" or not self.dataset.has_validation):
            raise SpecError("early_stopping and evaluation.keep_best_model choose among "
                            "evaluations: give validation data and an evaluation strategy",
                            "early_stopping" if self.early_stopping else
                            "evaluation.keep_best_model")
        self._refuse_other_tasks_fields()
        if self.compute.packing is True and self.task != "causal-lm":
            raise SpecError(f"compute.packing packs causal-lm rows; {self.task} pads its "
                            "batches instead: remove it", "compute.packing")
        dataset, hyper = self.dataset, self.hyperparameters
        prompts = (dataset.prompt_column, dataset.completion_column)
        if any(prompts) and not all(prompts):
            raise SpecError("dataset.prompt_column and dataset.completion_column go together",
                            "dataset.completion_column" if dataset.prompt_column
                            else "dataset.prompt_column")
        if any(prompts) and dataset.messages_column:
            raise SpecError("give dataset.messages_column or dataset.prompt_column and "
                            "dataset.completion_column, not both", "dataset.messages_column")
        if hyper.train_on_completion_only is not None and not (any(prompts)
                                                               or dataset.messages_column):
            raise SpecError("hyperparameters.train_on_completion_only needs "
                            "dataset.prompt_column and dataset.completion_column, or "
                            "dataset.messages_column", "hyperparameters.train_on_completion_only")
        if dataset.answer_start_column and not dataset.answer_column:
            raise SpecError("dataset.answer_start_column goes with dataset.answer_column",
                            "dataset.answer_start_column")
        if (hyper.doc_stride or 0) >= hyper.max_seq_length // 2:
            raise SpecError("hyperparameters.doc_stride must be under half of max_seq_length: "
                            "each window must move on by more than it keeps",
                            "hyperparameters.doc_stride")
        if self.compute.distributed == "fsdp" and self.compute.gpus < 2:
            raise SpecError("compute.distributed 'fsdp' shards the model across ranks: set "
                            "compute.gpus to 2 or more, or remove it", "compute.distributed")
        if self.compute.distributed == "fsdp" and self.lora is not None:
            raise SpecError("lora does not go with compute.distributed 'fsdp': saving the "
                            "adapter needs the whole model on one rank; use 'ddp', with "
                            "lora.quantization to shrink the base", "compute.distributed")
        if self.lora is not None and self.freeze.model_dump(exclude_defaults=True):
            raise SpecError("lora and freeze do not go together: LoRA already keeps the "
                            "backbone's weights fixed; remove freeze", "freeze")
        if self.hyperparameters.multi_label_threshold is not None and not dataset.multi_label:
            raise SpecError("hyperparameters.multi_label_threshold needs dataset.multi_label",
                            "hyperparameters.multi_label_threshold")
        metric = self.evaluation.metric_for_best_model
        if metric is not None and metric not in self.metric_names():
            raise SpecError(f"evaluation.metric_for_best_model must be one of "
                            f"{', '.join(self.metric_names())} for this task",
                            "evaluation.metric_for_best_model")
        return self

    def metric_names(self) -> tuple[str, ...]:
        """What the task's evaluations report (as eval_<name>); the first is the default
        for choosing the best model."""
        return DECLARATIONS[self.task].metric_names(self.dataset)

    def _refuse_other_tasks_fields(self) -> None:
        for path, tasks in TASK_FIELDS.items():
            section_name, name = path.split(".")
            section = getattr(self, section_name)
            if self.task not in tasks and getattr(section, name) != \
                    type(section).model_fields[name].default:
                named = (tasks[0] if len(tasks) == 1
                         else f"{', '.join(tasks[:-1])} and {tasks[-1]}")
                raise SpecError(f"{path} is for the {named} task{'s' if len(tasks) > 1 else ''} "
                                f"only; remove it for {self.task}", path)

    def resolved(self) -> JobSpec:
        """The spec with the defaults that depend on other fields filled in."""
        spec = self.model_copy(deep=True)
        evaluation = spec.evaluation
        if evaluation.strategy is None:
            evaluation.strategy = "epoch" if spec.dataset.has_validation else "no"
        if evaluation.strategy == "steps" and evaluation.steps is None:
            evaluation.steps = 500
        if evaluation.keep_best_model is None:
            evaluation.keep_best_model = spec.early_stopping is not None
        if evaluation.keep_best_model and evaluation.metric_for_best_model is None:
            evaluation.metric_for_best_model = spec.metric_names()[0]
        if spec.hyperparameters.warmup_steps is None and spec.hyperparameters.warmup_ratio is None:
            spec.hyperparameters.warmup_steps = 0
        DECLARATIONS[spec.task].fill_defaults(spec)
        return spec
