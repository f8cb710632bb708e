"""causal-lm: continue text; plain text, prompt/completion pairs or chats."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.jobs.tasks.columns import MESSAGES, TEXT, Column
from app.jobs.tasks.declaration import TaskDeclaration

if TYPE_CHECKING:
    from app.jobs.spec import DatasetSpec, JobSpec


def _columns(data: DatasetSpec) -> list[Column]:
    if data.messages_column:
        return [Column("messages_column", data.messages_column, MESSAGES)]
    if data.prompt_column and data.completion_column:
        return [Column("prompt_column", data.prompt_column, TEXT),
                Column("completion_column", data.completion_column, TEXT)]
    return [Column("text_column", data.text_column, TEXT)]


def _fill_defaults(spec: JobSpec) -> None:
    hyper, data = spec.hyperparameters, spec.dataset
    if (data.prompt_column or data.messages_column) and hyper.train_on_completion_only is None:
        hyper.train_on_completion_only = True


TASK = TaskDeclaration(
    name="causal-lm", columns=_columns, metrics=("loss", "perplexity"),
    fields=("dataset.text_column", "dataset.prompt_column", "dataset.completion_column",
            "dataset.messages_column", "hyperparameters.train_on_completion_only"),
    fill_defaults=_fill_defaults)
