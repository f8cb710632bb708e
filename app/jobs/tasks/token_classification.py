"""token-classification: one tag per word (named entities, parts of speech)."""

from __future__ import annotations

from app.jobs.tasks.columns import TAGS, WORDS, Column
from app.jobs.tasks.declaration import TaskDeclaration

TASK = TaskDeclaration(
    name="token-classification",
    columns=lambda data: [Column("tokens_column", data.tokens_column, WORDS),
                          Column("tags_column", data.tags_column, TAGS)],
    metrics=("f1", "precision", "recall", "accuracy", "loss"),
    fields=("dataset.tokens_column", "dataset.tags_column", "dataset.label_all_subtokens"))
