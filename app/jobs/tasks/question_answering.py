"""question-answering: the answer's span in a context, SQuAD answers or flat columns."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.jobs.tasks.columns import ANSWER, ANSWERS, OFFSET, TEXT, Column
from app.jobs.tasks.declaration import TaskDeclaration

if TYPE_CHECKING:
    from app.jobs.spec import DatasetSpec, JobSpec


def _columns(data: DatasetSpec) -> list[Column]:
    question = [Column("question_column", data.question_column, TEXT),
                Column("context_column", data.context_column, TEXT)]
    if data.answer_column is None:
        return [*question, Column("answers_column", data.answers_column, ANSWERS)]
    start = ([Column("answer_start_column", data.answer_start_column, OFFSET)]
             if data.answer_start_column else [])
    return [*question, Column("answer_column", data.answer_column, ANSWER), *start]


def _fill_defaults(spec: JobSpec) -> None:
    hyper = spec.hyperparameters
    hyper.doc_stride = hyper.doc_stride or hyper.max_seq_length // 4
    hyper.max_answer_length = hyper.max_answer_length or 30


TASK = TaskDeclaration(
    name="question-answering", columns=_columns, metrics=("f1", "exact_match", "loss"),
    fields=("dataset.question_column", "dataset.context_column", "dataset.answers_column",
            "dataset.answer_column", "dataset.answer_start_column",
            "dataset.allow_unanswerable", "hyperparameters.doc_stride",
            "hyperparameters.max_answer_length"),
    fill_defaults=_fill_defaults)
