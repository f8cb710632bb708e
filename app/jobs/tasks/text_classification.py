"""text-classification: one label per text (or text pair); with dataset.multi_label, any
number of labels per text."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.jobs.tasks.columns import LABEL, LABEL_LIST, Column, text_and_label
from app.jobs.tasks.declaration import TaskDeclaration

if TYPE_CHECKING:
    from app.jobs.spec import DatasetSpec, JobSpec


def _columns(data: DatasetSpec) -> list[Column]:
    return text_and_label(data, LABEL_LIST if data.multi_label else LABEL)


def _fill_defaults(spec: JobSpec) -> None:
    if spec.dataset.multi_label and spec.hyperparameters.multi_label_threshold is None:
        spec.hyperparameters.multi_label_threshold = 0.5


TASK = TaskDeclaration(
    name="text-classification", columns=_columns,
    # Macro F1 copes with unbalanced classes.
    metrics=("f1", "accuracy", "precision", "recall", "loss"),
    multi_label_metrics=("f1_micro", "f1_macro", "subset_accuracy", "hamming_loss",
                         "precision_micro", "recall_micro", "loss"),
    fields=("dataset.text_column", "dataset.text_pair_column", "dataset.label_column",
            "dataset.multi_label", "hyperparameters.multi_label_threshold"),
    fill_defaults=_fill_defaults)
