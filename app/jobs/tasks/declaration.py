"""TaskDeclaration: what the API and the worker both know of one task, with no heavy import."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.jobs.tasks.columns import Column

if TYPE_CHECKING:
    from app.jobs.spec import DatasetSpec, JobSpec

# The metrics that improve by going down; every other one improves by going up.
_LOWER_IS_BETTER = ("loss", "mse", "mae", "perplexity", "hamming_loss")


def greater_is_better(metric: str) -> bool:
    return metric not in _LOWER_IS_BETTER


def _no_defaults(_spec: JobSpec) -> None:
    return None


@dataclass(frozen=True)
class TaskDeclaration:
    # The spec's `task`.
    name: str
    # The dataset columns the task reads from every split.
    columns: Callable[[DatasetSpec], list[Column]]
    # What its evaluations report (as eval_<name>); the first is its default for choosing the
    # best model.
    metrics: tuple[str, ...]
    # The spec fields ("section.field") that only some tasks read, those this one reads: set
    # for a task that does not declare them, they would do nothing, and the API refuses them.
    fields: tuple[str, ...] = ()
    # What its evaluations report with dataset.multi_label, for a task that has that option.
    multi_label_metrics: tuple[str, ...] | None = None
    # Fills the task's own defaults that depend on other fields, in a spec being resolved.
    fill_defaults: Callable[[JobSpec], None] = _no_defaults

    def metric_names(self, data: DatasetSpec) -> tuple[str, ...]:
        if data.multi_label and self.multi_label_metrics is not None:
            return self.multi_label_metrics
        return self.metrics
