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
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.jobs.tasks import DECLARATIONS, TASK_FIELDS, TASK_NAMES

# The declared tasks (app/jobs/tasks/), in their order.
Task = Literal[TASK_NAMES]  # type: ignore[valid-type]
Optimizer = Literal["adamw", "sgd", "adafactor"]
Scheduler = Literal[
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
]
EvalStrategy = Literal["no", "steps", "epoch"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Attention = Literal["auto", "sdpa", "eager", "flash_attention_2"]
Quantization = Literal["none", "8bit", "4bit"]

# A catalog name or a Hub id: path segments of letters, digits, '-', '_', '.', never '..',
# never absolute, never a URL.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_COLUMN = Annotated[str, Field(min_length=1, max_length=256)]
Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]


class SpecError(ValueError):
    """A spec problem at one field, which the API's error names as `param`."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


# The validation context of `JobSpec.from_stored`: a spec the API accepted earlier.
_STORED = "stored"


def _reading_stored(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get(_STORED))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _ignore_unknown_when_stored(cls, data: Any, info: ValidationInfo) -> Any:
        # A stored spec may name a field that a later release removed: it does nothing now.
        if _reading_stored(info) and isinstance(data, dict):
            return {key: value for key, value in data.items() if key in cls.model_fields}
        return data


_SPLIT = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._\[\]:%+-]+$")]


class HubDataset(_Strict):
    hub: str = Field(min_length=1, max_length=200, description="Hugging Face Hub dataset id")
    config: str | None = Field(default=None, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")
    train_split: _SPLIT = "train"
    validation_split: _SPLIT | None = Field(default=None,
                                            description="Hub split used for validation")
    test_split: _SPLIT | None = None

    @field_validator("hub")
    @classmethod
    def _hub_id(cls, value: str) -> str:
        # load_dataset would also read a local folder or a script: only Hub ids are taken.
        if not _HUB_ID.match(value) or ".." in value:
            raise ValueError("a Hub dataset id looks like 'glue' or 'org/name'; paths and URLs "
                             "are not accepted")
        return value


class DatasetSpec(_Strict):
    train: str | None = Field(default=None, max_length=4096,
                              description="Id of an uploaded dataset")
    validation: str | None = Field(default=None, max_length=4096)
    test: str | None = Field(default=None, max_length=4096)
    hub: HubDataset | None = None
    validation_split: Fraction | None = Field(
        default=None, description="Fraction of train held out for validation (seeded)")
    test_split: Fraction | None = Field(
        default=None, description="Fraction of train held out for test (seeded)")
    text_column: _COLUMN = "text"
    text_pair_column: _COLUMN | None = None
    label_column: _COLUMN = "label"
    multi_label: bool = Field(
        default=False, description="text-classification: the label column holds a list of "
                                   "labels per row (JSON Lines, JSON or Parquet)")
    tokens_column: _COLUMN = Field(
        default="tokens", description="token-classification: the list of words of each row")
    tags_column: _COLUMN = Field(
        default="tags", description="token-classification: the list of tags, one per word")
    label_all_subtokens: bool = Field(
        default=False, description="token-classification: give every sub-word token its "
                                   "word's tag, not only the first (the rest are ignored)")
    prompt_column: _COLUMN | None = Field(
        default=None, description="causal-lm: the prompt of prompt/completion rows")
    completion_column: _COLUMN | None = Field(
        default=None, description="causal-lm: the completion of prompt/completion rows")
    messages_column: _COLUMN | None = Field(
        default=None, description="causal-lm: a chat per row, a list of {role, content}, "
                                  "rendered with the tokenizer's chat template")
    question_column: _COLUMN = Field(default="question", description="question-answering")
    context_column: _COLUMN = Field(default="context", description="question-answering")
    answers_column: _COLUMN = Field(
        default="answers", description="question-answering: SQuAD answers, "
                                       '{"text": [...], "answer_start": [...]} per row')
    answer_column: _COLUMN | None = Field(
        default=None, description="question-answering with flat columns: the answer's text "
                                  "(instead of answers_column)")
    answer_start_column: _COLUMN | None = Field(
        default=None, description="question-answering with flat columns: the answer's first "
                                  "character in the context; default: where the text first "
                                  "occurs")
    allow_unanswerable: bool = Field(
        default=False, description="question-answering: rows may have no answer (SQuAD 2.0); "
                                   "the model learns to answer nothing to them")
    source_column: _COLUMN = Field(default="source", description="seq2seq: the input text")
    target_column: _COLUMN = Field(default="target", description="seq2seq: the text to write")
    source_prefix: str | None = Field(
        default=None, max_length=500,
        description="seq2seq: put before every source, e.g. 'translate English to German: ' "
                    "for T5")

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo) -> DatasetSpec:
        if _reading_stored(info):
            return self
        if (self.train is None) == (self.hub is None):
            raise SpecError("give exactly one of 'train' (an uploaded dataset id) or 'hub'",
                            "dataset.train")
        if self.hub is not None and (self.validation or self.test):
            raise SpecError("'validation' and 'test' ids go with 'train', not with 'hub'; "
                            "use hub.validation_split and hub.test_split", "dataset.hub")
        if self.validation and self.validation_split:
            raise SpecError("give 'validation' or 'validation_split', not both",
                            "dataset.validation_split")
        if self.test and self.test_split:
            raise SpecError("give 'test' or 'test_split', not both", "dataset.test_split")
        if (self.validation_split or 0) + (self.test_split or 0) >= 0.9:
            raise SpecError("validation_split + test_split must leave at least 10% for "
                            "training", "dataset.validation_split")
        return self

    def uploaded_ids(self) -> dict[str, str]:
        """The uploaded datasets this spec reads, by role."""
        roles = {"train": self.train, "validation": self.validation, "test": self.test}
        return {role: ref for role, ref in roles.items() if ref}

    @property
    def has_validation(self) -> bool:
        hub_validation = self.hub is not None and self.hub.validation_split is not None
        return bool(self.validation or self.validation_split or hub_validation)


class Hyperparameters(_Strict):
    epochs: float = Field(default=3.0, gt=0, le=1000)
    max_steps: int | None = Field(default=None, ge=1, le=10_000_000,
                                  description="Overrides epochs when set")
    learning_rate: float = Field(default=2e-5, gt=0, le=10)
    batch_size: int = Field(default=16, ge=1, le=4096)
    eval_batch_size: int = Field(default=64, ge=1, le=4096)
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024)
    warmup_steps: int | None = Field(default=None, ge=0, le=10_000_000)
    warmup_ratio: float | None = Field(default=None, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    max_seq_length: int = Field(default=128, ge=8, le=8192)
    lr_scheduler: Scheduler = "linear"
    optimizer: Optimizer = "adamw"
    seed: int = Field(default=42, ge=0, le=2**32 - 1)
    multi_label_threshold: float | None = Field(
        default=None, gt=0.0, lt=1.0,
        description="multi-label classification: a label is predicted when its probability "
                    "is at least this (default 0.5)")
    mlm_probability: float | None = Field(
        default=None, gt=0.0, lt=1.0,
        description="masked-lm only: the share of tokens masked for prediction (default 0.15)")
    train_on_completion_only: bool | None = Field(
        default=None, description="causal-lm with prompt/completion or chat rows: the loss "
                                  "counts the completion's (the assistant's) tokens only "
                                  "(default true)")
    doc_stride: int | None = Field(
        default=None, ge=1, le=8192,
        description="question-answering: tokens shared by consecutive windows of a long "
                    "context (default max_seq_length // 4)")
    max_answer_length: int | None = Field(
        default=None, ge=1, le=8192,
        description="question-answering: the longest answer predicted, in tokens (default 30)")
    max_target_length: int | None = Field(
        default=None, ge=1, le=8192,
        description="seq2seq: targets are cut to this many tokens (default 128)")
    generation_max_length: int | None = Field(
        default=None, ge=1, le=8192,
        description="seq2seq: tokens generated at evaluation (default max_target_length)")
    num_beams: int | None = Field(
        default=None, ge=1, le=64,
        description="seq2seq: beams of the beam search at evaluation (default 1: greedy)")

    @model_validator(mode="after")
    def _one_warmup(self, info: ValidationInfo) -> Hyperparameters:
        if _reading_stored(info):
            return self
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise SpecError("give warmup_steps or warmup_ratio, not both",
                            "hyperparameters.warmup_ratio")
        return self


class Freeze(_Strict):
    embeddings: bool = Field(default=False, description="Freeze the embedding layer")
    bottom_layers: int = Field(default=0, ge=0, le=1000,
                               description="Number of lower encoder layers to freeze")
    encoder: bool = Field(default=False,
                          description="Freeze the whole encoder: train the head only")


class Lora(_Strict):
    r: int = Field(default=8, ge=1, le=1024, description="Rank of the low-rank update")
    alpha: float = Field(default=16.0, gt=0, le=4096, description="Scale of the update: alpha/r")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: list[Annotated[str, Field(min_length=1, max_length=128,
                                              pattern=r"^[A-Za-z0-9_.]+$")]] | None = Field(
        default=None, max_length=64,
        description="Names of the layers to adapt; default: every linear layer of the backbone")
    quantization: Quantization = Field(
        default="none",
        description="Load the base model's weights quantized and frozen (QLoRA) with "
                    "bitsandbytes: '8bit' (LLM.int8) or '4bit' (NF4, double quantization, "
                    "bf16 compute); the adapters and the head train in full precision")


class Compute(_Strict):
    """How the job runs on the worker's hardware, apart from what it learns. 'auto' values are
    resolved by the worker for its hardware; the job's attempts and events say what they
    became."""

    precision: Precision = Field(
        default="auto",
        description="'auto': bf16 on CUDA GPUs that have it, else fp16 with loss scaling on "
                    "CUDA (and TF32 matmuls where the GPU has them), bf16 autocast on CPUs "
                    "with native bf16 (avx512_bf16 or AMX), else fp32")
    gradient_checkpointing: bool = Field(
        default=False, description="Recompute activations in the backward pass: less memory, "
                                   "about 20% slower")
    attention: Attention = Field(
        default="auto", description="'auto': flash_attention_2 where installed and the model "
                                    "has it on a GPU, else sdpa where the model has it, else "
                                    "eager")
    compile: bool = Field(default=False, description="torch.compile the model")
    length_grouping: Literal["auto"] | bool = Field(
        default="auto", description="Batch rows of similar length together, so that a batch "
                                    "pads less; 'auto': on for tasks whose rows vary in length")
    packing: Literal["auto"] | bool = Field(
        default="auto", description="causal-lm with prompt/completion or chat rows: "
                                    "padding-free packing of rows into one sequence per batch; "
                                    "'auto': on where the model's attention supports it")

    @field_validator("length_grouping", "packing", mode="before")
    @classmethod
    def _auto_or_bool(cls, value: Any) -> Any:
        # Said once: the union's own error would name each of its branches.
        if value == "auto" or isinstance(value, bool):
            return value
        raise ValueError("must be 'auto', true or false")


class Evaluation(_Strict):
    strategy: EvalStrategy | None = Field(
        default=None, description="Default: 'epoch' with validation data, else 'no'")
    steps: int | None = Field(default=None, ge=1, le=10_000_000,
                              description="Evaluate every N steps (strategy 'steps'; default 500)")
    metric_for_best_model: str | None = Field(
        default=None, max_length=64,
        description="The evaluation metric that picks the best model; default per task: "
                    "'f1' (classification, tags, QA), 'f1_micro' (multi-label), 'mse' "
                    "(regression), 'chrf' (seq2seq), 'loss' (language models)")
    keep_best_model: bool | None = Field(
        default=None, description="Save the best evaluated model instead of the last; "
                                  "default: on with early_stopping, else off")


class EarlyStopping(_Strict):
    patience: int = Field(ge=1, le=1000, description="Evaluations in a row without improvement "
                                                     "after which training stops")
    threshold: float = Field(default=0.0, ge=0.0, le=1e6,
                             description="The least change of the metric that counts as an "
                                         "improvement")


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


class JobSpec(_Strict):
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
        return cls.model_validate(data, context={_STORED: True})

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
        if _reading_stored(info):
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
