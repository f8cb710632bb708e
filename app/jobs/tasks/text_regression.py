"""text-regression: one number per text (or text pair)."""

from __future__ import annotations

from app.jobs.tasks.columns import NUMBER, text_and_label
from app.jobs.tasks.declaration import TaskDeclaration

TASK = TaskDeclaration(
    name="text-regression", columns=lambda data: text_and_label(data, NUMBER),
    # MSE is what regression minimises.
    metrics=("mse", "mae", "r2", "pearson", "spearman", "loss"),
    fields=("dataset.text_column", "dataset.text_pair_column", "dataset.label_column"))
