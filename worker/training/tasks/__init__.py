"""One recipe module per task: the heavy part of a task, which only the worker needs.

What the API and the worker both know of a task (its columns and their kinds, its spec
fields, its metrics, its defaults) is its light declaration in app/jobs/tasks/, which its
recipe names as `task`. Loading, cleaning, splitting and tokenizing the data are shared
(worker/training/data.py), and so are the Trainer, checkpoints and reporting. A recipe brings
the model class and head, how batches are collated, how the task is scored, and the
`transformers.pipeline` that loads its model.

Adding a task touches its declaration (a module in app/jobs/tasks/, named in DECLARATIONS
there), its recipe (a module here, named in `recipes()`; it also says how LoRA treats the
task's head) and its tests; app/jobs/spec.py only
where the task brings spec fields of its own, or a default metric for the best model that
the description of evaluation.metric_for_best_model does not name yet.
tests/training/test_task_declarations.py checks that each declared task has a recipe and each
recipe a declared task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasets import Dataset
from transformers import (
    DataCollatorWithPadding,
    EvalPrediction,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)

from app.jobs.spec import JobSpec
from app.jobs.tasks.declaration import TaskDeclaration
from worker.training.data import PreparedData, tokenize_splits
from worker.training.lora import LoraHead
from worker.training.metrics import Metrics


@dataclass(frozen=True)
class Evaluated:
    """What a task's metrics may need besides the predictions and the labels."""

    spec: JobSpec
    label_names: list[str]  # in id order
    split: Dataset  # tokenized, as the task's tokenize made it
    tokenizer: PreTrainedTokenizerBase


@dataclass(frozen=True)
class TaskRecipe:
    # The task it trains, as the API knows it.
    task: TaskDeclaration
    # An Auto class, e.g. AutoModelForSequenceClassification.
    model_class: Any
    # None where transformers 5 has no pipeline for the task: the model card then names the
    # Auto class to load it with.
    pipeline: str | None
    # from_pretrained options that shape the head, given the label names in id order.
    head: Callable[[list[str]], dict[str, Any]]
    collator: Callable[[PreTrainedTokenizerBase, JobSpec], Any]
    # Which models suit the task, for the hint of a job whose model does not.
    models_hint: str
    # Options for loading the tokenizer.
    tokenizer_options: dict[str, Any] = field(default_factory=dict)
    # Makes the Trainer's compute_metrics for one evaluated split; None when the loss says it
    # all (then nothing but the loss is kept from an evaluation).
    metrics: Callable[[Evaluated], Callable[[EvalPrediction], Metrics]] | None = None
    # Metrics that follow from the others, e.g. perplexity from the loss, by prefix.
    derived_metrics: Callable[[dict[str, Any], str], Metrics] | None = None
    # The final evaluation's per-class report: (outputs, labels, label names, spec).
    class_report: Callable[[np.ndarray, np.ndarray, list[str], JobSpec],
                           dict[str, dict[str, float]]] | None = None
    # Token ids and labels for every split: by default the text (and pair) column, truncated.
    tokenize: Callable[[PreparedData, PreTrainedTokenizerBase, JobSpec],
                       dict[str, Dataset]] = lambda prepared, tokenizer, spec: tokenize_splits(
        prepared, tokenizer, spec.dataset, spec.hyperparameters.max_seq_length)
    # Examples of what the trained model does, saved with it as samples.json.
    samples: Callable[[PreTrainedModel, PreTrainedTokenizerBase, PreparedData, JobSpec],
                      list[dict[str, str]]] | None = None
    # Refuses (InvalidSpec) a model that transformers would load for the task but that cannot
    # learn it, e.g. a BERT for causal-lm; given the model's config.
    check_model: Callable[[PretrainedConfig, JobSpec], None] = lambda _config, _spec: None
    # Readies the trained model for saving (its generation settings, say).
    finish: Callable[[PreTrainedModel, JobSpec], None] = lambda _model, _spec: None
    # How LoRA treats the task's head.
    lora: LoraHead = LoraHead()
    # Whether training packs the token stream into blocks (nothing is then truncated).
    packs_tokens: Callable[[JobSpec], bool] = lambda _spec: False
    # The Trainer, its arguments and the task's own arguments (generation settings, say).
    trainer_class: type[Trainer] = Trainer
    arguments_class: type[TrainingArguments] = TrainingArguments
    arguments: Callable[[JobSpec], dict[str, Any]] = lambda _: {}


ENCODER_HINT = "Use an encoder such as BERT, RoBERTa, DistilBERT or MiniLM."


def labelled_head(label_names: list[str], problem_type: str | None = None) -> dict[str, Any]:
    """A head with one output per label; the names become id2label, so that the saved model
    predicts the dataset's own names."""
    head: dict[str, Any] = {"num_labels": len(label_names),
                            "id2label": dict(enumerate(label_names)),
                            "label2id": {name: index for index, name in enumerate(label_names)}}
    return head | ({"problem_type": problem_type} if problem_type else {})


def padded_batches(tokenizer: PreTrainedTokenizerBase, _: JobSpec) -> DataCollatorWithPadding:
    """Batches padded to their longest row, never to max_seq_length."""
    return DataCollatorWithPadding(tokenizer)


# The key of multi-label text classification, which is a text-classification option.
MULTI_LABEL = "text-classification/multi-label"


def recipes() -> dict[str, TaskRecipe]:
    """Every recipe by task name. Imports every task module: the task modules import this
    one, and the standby trainer calls it to have them imported before a job arrives."""
    from worker.training.tasks import (
        causal_lm,
        masked_lm,
        multi_label_classification,
        question_answering,
        seq2seq,
        text_classification,
        text_regression,
        token_classification,
    )

    return {"text-classification": text_classification.RECIPE,
            MULTI_LABEL: multi_label_classification.RECIPE,
            "text-regression": text_regression.RECIPE, "masked-lm": masked_lm.RECIPE,
            "token-classification": token_classification.RECIPE,
            "causal-lm": causal_lm.RECIPE, "question-answering": question_answering.RECIPE,
            "seq2seq": seq2seq.RECIPE}


def recipe_for(spec: JobSpec) -> TaskRecipe:
    return recipes()[MULTI_LABEL if spec.dataset.multi_label else spec.task]


def with_derived_metrics(recipe: TaskRecipe, metrics: dict[str, Any],
                         prefix: str) -> dict[str, Any]:
    if recipe.derived_metrics is None:
        return metrics
    return {**metrics, **recipe.derived_metrics(metrics, prefix)}
