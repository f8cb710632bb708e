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

from transformers import EvalPrediction, PreTrainedTokenizerBase

from app.jobs.spec import JobSpec, Task
from worker.training.metrics import Metrics


@dataclass(frozen=True)
class TaskRecipe:
    # An Auto class, e.g. AutoModelForSequenceClassification.
    model_class: Any
    pipeline: str
    # from_pretrained options that shape the head, given the label names in id order.
    head: Callable[[list[str]], dict[str, Any]]
    collator: Callable[[PreTrainedTokenizerBase, JobSpec], Any]
    # The Trainer's compute_metrics; None when the loss says it all (nothing else is kept).
    compute_metrics: Callable[[EvalPrediction], Metrics] | None = None
    # Metrics that follow from the others, e.g. perplexity from the loss, by prefix.
    derived_metrics: Callable[[dict[str, Any], str], Metrics] | None = None
    # Whether the final evaluation adds a per-class report.
    per_class_report: bool = False


def recipe_for(task: Task) -> TaskRecipe:
    from worker.training.tasks import masked_lm, text_classification, text_regression

    recipes = {"text-classification": text_classification.RECIPE,
               "text-regression": text_regression.RECIPE, "masked-lm": masked_lm.RECIPE}
    return recipes[task]


def with_derived_metrics(recipe: TaskRecipe, metrics: dict[str, Any],
                         prefix: str) -> dict[str, Any]:
    if recipe.derived_metrics is None:
        return metrics
    return {**metrics, **recipe.derived_metrics(metrics, prefix)}
