"""The columns a task reads and their kinds, one vocabulary for both sides: the API checks an
uploaded dataset's column types at submit time (422 naming the column and what was expected),
and the worker casts text columns, drops rows whose text or label is missing and encodes the
labels by their kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.jobs.spec import DatasetSpec

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
_EXPECTED_TYPES: dict[str, tuple[tuple[str, ...], str]] = {
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


def type_problem(column: Column, upload_type: str) -> str | None:
    """What is wrong with a column of `upload_type` for `column`'s kind; None if nothing."""
    if column.kind == TEXT:
        return None if upload_type not in _NOT_TEXT else "text"
    if column.kind == LABEL:
        return None if upload_type != "list" else "one label per row (set dataset.multi_label " \
                                                  "to true for a list of labels per row)"
    if column.kind == ANSWER:
        return None if upload_type not in _NOT_TEXT else "the answer's text"
    accepted, expected = _EXPECTED_TYPES[column.kind]
    return None if upload_type in accepted else expected


def text_and_label(data: DatasetSpec, label_kind: str) -> list[Column]:
    """The columns of a classifier: the text, the optional text pair, the label."""
    pair = ([Column("text_pair_column", data.text_pair_column, TEXT)]
            if data.text_pair_column else [])
    return [Column("text_column", data.text_column, TEXT), *pair,
            Column("label_column", data.label_column, label_kind)]
