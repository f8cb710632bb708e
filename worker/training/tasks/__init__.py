"""One module per task: the part of the recipe that differs from task to task.

Loading, cleaning, splitting and tokenizing the data are shared (worker/training/data.py), and
so are the Trainer, checkpoints and reporting. A task brings its model class and head, how its
batches are collated, how it is scored, and the `transformers.pipeline` that loads its model:
adding a task is adding a module here and its name to `Task` in the spec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from datasets import Dataset
from transformers import EvalPrediction, PreTrainedModel, PreTrainedTokenizerBase

from app.jobs.spec import JobSpec, Task
from worker.training.data import PreparedData
from worker.training.metrics import Metrics


@dataclass(frozen=True)
class TaskRecipe:
    # An Auto class, e.g. AutoModelForSequenceClassification.
    model_class: Any
    pipeline: str
    # from_pretrained options that shape the head, given the label names in id order.
    head: Callable[[list[str]], dict[str, Any]]
    collator: Callable[[PreTrainedTokenizerBase, JobSpec], Any]
    # Which models suit the task, for the hint of a job whose model does not.
    models_hint: str
    # The Trainer's compute_metrics; None when the loss says it all (nothing else is kept).
    compute_metrics: Callable[[EvalPrediction], Metrics] | None = None
    # Metrics that follow from the others, e.g. perplexity from the loss, by prefix.
    derived_metrics: Callable[[dict[str, Any], str], Metrics] | None = None
    # Whether the final evaluation adds a per-class report.
    per_class_report: bool = False
    # Token ids and labels for every split; None: the shared text (and pair) tokenization.
    tokenize: Callable[[PreparedData, PreTrainedTokenizerBase, JobSpec],
                       dict[str, Dataset]] | None = None
    # Examples of what the trained model does, saved with it as samples.json.
    samples: Callable[[PreTrainedModel, PreTrainedTokenizerBase, PreparedData, JobSpec],
                      list[dict[str, str]]] | None = None


def recipe_for(task: Task) -> TaskRecipe:
    from worker.training.tasks import causal_lm, masked_lm, text_classification, text_regression

    recipes = {"text-classification": text_classification.RECIPE,
               "text-regression": text_regression.RECIPE, "masked-lm": masked_lm.RECIPE,
               "causal-lm": causal_lm.RECIPE}
    return recipes[task]


def with_derived_metrics(recipe: TaskRecipe, metrics: dict[str, Any],
                         prefix: str) -> dict[str, Any]:
    if recipe.derived_metrics is None:
        return metrics
    return {**metrics, **recipe.derived_metrics(metrics, prefix)}
