"""What each task reads and reports: its columns and their kinds, its spec fields, its
metrics.

The column table serves both sides: the API checks an uploaded dataset's column types at
submit time (422 naming the column and what was expected), and the worker casts text columns
and drops rows whose text or label is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.jobs.spec import JobSpec

# The metrics each task's evaluation reports (as eval_<name>), and its default for choosing
# the best model: macro F1 copes with unbalanced classes, MSE is what regression minimises.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "text-classification": ("f1", "accuracy", "precision", "recall", "loss"),
    "text-regression": ("mse", "mae", "r2", "pearson", "spearman", "loss"),
    "token-classification": ("f1", "precision", "recall", "accuracy", "loss"),
    "question-answering": ("f1", "exact_match", "loss"),
    # chrF scores translation and summaries alike and stays stable on small validation sets.
    "seq2seq": ("chrf", "bleu", "rouge1", "rouge2", "rougeL", "loss"),
    "masked-lm": ("loss", "perplexity"),
    "causal-lm": ("loss", "perplexity"),
}
MULTI_LABEL_METRICS = ("f1_micro", "f1_macro", "subset_accuracy", "hamming_loss",
                       "precision_micro", "recall_micro", "loss")
_LOWER_IS_BETTER = ("loss", "mse", "mae", "perplexity", "hamming_loss")
# Spec fields that one family of tasks reads: set for another task, they would do nothing.
_CLASSIFIERS = ("text-classification", "text-regression")
TASK_FIELDS: dict[str, tuple[str, ...]] = {
    "dataset.text_column": (*_CLASSIFIERS, "masked-lm", "causal-lm"),
    "dataset.text_pair_column": _CLASSIFIERS, "dataset.label_column": _CLASSIFIERS,
    "dataset.multi_label": ("text-classification",),
    "hyperparameters.multi_label_threshold": ("text-classification",),
    **dict.fromkeys(("dataset.tokens_column", "dataset.tags_column",
                     "dataset.label_all_subtokens"), ("token-classification",)),
    **dict.fromkeys(("dataset.question_column", "dataset.context_column",
                     "dataset.answers_column", "dataset.answer_column",
                     "dataset.answer_start_column", "dataset.allow_unanswerable",
                     "hyperparameters.doc_stride", "hyperparameters.max_answer_length"),
                    ("question-answering",)),
    **dict.fromkeys(("dataset.source_column", "dataset.target_column", "dataset.source_prefix",
                     "hyperparameters.max_target_length", "hyperparameters.generation_max_length",
                     "hyperparameters.num_beams"), ("seq2seq",)),
    **dict.fromkeys(("dataset.prompt_column", "dataset.completion_column",
                     "dataset.messages_column", "hyperparameters.train_on_completion_only"),
                    ("causal-lm",)),
    "hyperparameters.mlm_probability": ("masked-lm",),
}


def greater_is_better(metric: str) -> bool:
    return metric not in _LOWER_IS_BETTER

# Kinds of column: what a value is to the task.
TEXT = "text"  # cast to a string; a row with an empty one is dropped
LABEL = "label"  # a class name or id; a row without one is dropped
NUMBER = "number"  # a regression target
LABEL_LIST = "label list"  # the labels of a multi-label row
WORDS = "words"  # a list of words (token-classification)
TAGS = "tags"  # a list of tags, one per word
ANSWERS = "answers"  # SQuAD answers: {"text": [...], "answer_start": [...]}
ANSWER = "answer"  # one answer's text; empty when the question has none
OFFSET = "offset"  # where the answer starts in the context, in characters
MESSAGES = "messages"  # a chat: a list of {"role", "content"}

# Kinds that are labels: a wrong type there is `invalid_label_column`.
LABEL_KINDS = (LABEL, NUMBER, LABEL_LIST, TAGS)
# The upload types (as dataset inspection names them) each kind accepts, and how to say it.
EXPECTED_TYPES: dict[str, tuple[tuple[str, ...], str]] = {
    NUMBER: (("integer", "float"), "numbers"),
    LABEL_LIST: (("list",), "a list of labels per row (JSON Lines, JSON or Parquet)"),
    WORDS: (("list",), "a list per row (JSON Lines, JSON or Parquet)"),
    TAGS: (("list",), "a list per row (JSON Lines, JSON or Parquet)"),
    ANSWERS: (("object",), 'an object per row such as {"text": ["..."], "answer_start": [0]} '
                           "(JSON Lines, JSON or Parquet)"),
    OFFSET: (("integer",), "whole numbers: the answer's first character in the context"),
    MESSAGES: (("list",), 'a list of {"role": ..., "content": ...} objects per row '
                          "(JSON Lines, JSON or Parquet)"),
}
# Text is anything that reads as text: not a list or an object.
_NOT_TEXT = ("list", "object")


@dataclass(frozen=True)
class Column:
    field: str  # the spec field that names it, e.g. "text_column"
    name: str  # the column in the data
    kind: str


def columns_read(spec: JobSpec) -> list[Column]:
    """The columns `spec`'s task reads from every split."""
    data, task = spec.dataset, spec.task
    if task == "token-classification":
        return [Column("tokens_column", data.tokens_column, WORDS),
                Column("tags_column", data.tags_column, TAGS)]
    if task == "question-answering":
        question = [Column("question_column", data.question_column, TEXT),
                    Column("context_column", data.context_column, TEXT)]
        if data.answer_column is None:
            return [*question, Column("answers_column", data.answers_column, ANSWERS)]
        start = ([Column("answer_start_column", data.answer_start_column, OFFSET)]
                 if data.answer_start_column else [])
        return [*question, Column("answer_column", data.answer_column, ANSWER), *start]
    if task == "seq2seq":
        return [Column("source_column", data.source_column, TEXT),
                Column("target_column", data.target_column, TEXT)]
    if data.messages_column:
        return [Column("messages_column", data.messages_column, MESSAGES)]
    if data.prompt_column and data.completion_column:
        return [Column("prompt_column", data.prompt_column, TEXT),
                Column("completion_column", data.completion_column, TEXT)]
    columns = [Column("text_column", data.text_column, TEXT)]
    if task in ("masked-lm", "causal-lm"):
        return columns
    if data.text_pair_column:
        columns.append(Column("text_pair_column", data.text_pair_column, TEXT))
    label_kind = (LABEL_LIST if data.multi_label
                  else NUMBER if task == "text-regression" else LABEL)
    return [*columns, Column("label_column", data.label_column, label_kind)]


def type_problem(column: Column, upload_type: str) -> str | None:
    """What is wrong with a column of `upload_type` for `column`'s kind; None if nothing."""
    if column.kind == TEXT:
        return None if upload_type not in _NOT_TEXT else "text"
    if column.kind == LABEL:
        return None if upload_type != "list" else "one label per row (set dataset.multi_label " \
                                                  "to true for a list of labels per row)"
    if column.kind == ANSWER:
        return None if upload_type not in _NOT_TEXT else "the answer's text"
    accepted, expected = EXPECTED_TYPES[column.kind]
    return None if upload_type in accepted else expected
