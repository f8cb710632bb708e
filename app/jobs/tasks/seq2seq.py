"""seq2seq: write a target text from a source text (translation, summaries)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.jobs.tasks.columns import TEXT, Column
from app.jobs.tasks.declaration import TaskDeclaration

if TYPE_CHECKING:
    from app.jobs.spec import JobSpec


def _fill_defaults(spec: JobSpec) -> None:
    hyper = spec.hyperparameters
    hyper.max_target_length = hyper.max_target_length or 128
    hyper.generation_max_length = hyper.generation_max_length or hyper.max_target_length
    hyper.num_beams = hyper.num_beams or 1


TASK = TaskDeclaration(
    name="seq2seq",
    columns=lambda data: [Column("source_column", data.source_column, TEXT),
                          Column("target_column", data.target_column, TEXT)],
    # chrF scores translation and summaries alike and stays stable on small validation sets.
    metrics=("chrf", "bleu", "rouge1", "rouge2", "rougeL", "loss"),
    fields=("dataset.source_column", "dataset.target_column", "dataset.source_prefix",
            "hyperparameters.max_target_length", "hyperparameters.generation_max_length",
            "hyperparameters.num_beams"),
    fill_defaults=_fill_defaults)
