"""masked-lm: predict masked tokens of plain text (domain adaptation of an encoder)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.jobs.tasks.columns import TEXT, Column
from app.jobs.tasks.declaration import TaskDeclaration

if TYPE_CHECKING:
    from app.jobs.spec import JobSpec


def _fill_defaults(spec: JobSpec) -> None:
    if spec.hyperparameters.mlm_probability is None:
        spec.hyperparameters.mlm_probability = 0.15


TASK = TaskDeclaration(
    name="masked-lm", columns=lambda data: [Column("text_column", data.text_column, TEXT)],
    metrics=("loss", "perplexity"),
    fields=("dataset.text_column", "hyperparameters.mlm_probability"),
    fill_defaults=_fill_defaults)
