"""Which tasks an uploaded dataset fits, and the dataset fields a job on it would use: the
dataset object shows them, and a job that names none of its task's columns gets them.

A recognised layout names its own fields (Alpaca's rewritten prompt and completion, a chat's
messages). Columns as uploaded (`tabular`) are tried under each task's default names and a few
names that public datasets use for the same thing (GLUE's `sentence`, `sentence1`/`sentence2`,
the Hub's `ner_tags`); a task fits when every column it reads is there and holds its kind of
value, by the same check a job's submission makes.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from app.datasets.layouts import LAYOUTS
from app.jobs.dataset_spec import DatasetSpec
from app.jobs.tasks import DECLARATIONS
from app.jobs.tasks.columns import type_problem

# Other names for a default column, in the order they are tried.
_TEXT_NAMES = ("text", "sentence", "sentence1", "content", "review", "document")
_LABEL_NAMES = ("label", "labels")
_TAGS_NAMES = ("tags", "ner_tags")


def task_fits(layout_name: str, column_types: dict[str, str],
              details: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The dataset fields of each task the data fits, by task, in the order tasks are listed."""
    layout = LAYOUTS[layout_name]
    found: dict[str, dict[str, Any]] = {}
    for task, declaration in DECLARATIONS.items():
        if layout.name == "tabular":
            fields = _tabular_fields(column_types)
        elif task in layout.tasks:
            fields = dict(layout.tasks[task])
        else:
            continue
        if task == "question-answering" and details.get("unanswerable_questions"):
            fields["allow_unanswerable"] = True
        own = {name: value for name, value in fields.items()
               if f"dataset.{name}" in declaration.fields}
        try:
            data = DatasetSpec(train="ds_fit", **own)
        except ValidationError:
            continue
        columns = declaration.columns(data)
        if all(column.name in column_types
               and type_problem(column, column_types[column.name]) is None
               for column in columns) and not _regression_labels(task, data, column_types):
            found[task] = own
    return found


def _tabular_fields(column_types: dict[str, str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for field, names in (("text_column", _TEXT_NAMES), ("label_column", _LABEL_NAMES),
                         ("tags_column", _TAGS_NAMES)):
        name = next((name for name in names if name in column_types), None)
        if name is not None and name != names[0]:
            fields[field] = name
    if fields.get("text_column") == "sentence1" and "sentence2" in column_types:
        fields["text_pair_column"] = "sentence2"
    if column_types.get(fields.get("label_column", "label")) == "list":
        fields["multi_label"] = True
    return fields


def _regression_labels(task: str, data: DatasetSpec, column_types: dict[str, str]) -> bool:
    # Any value can name a class, but fractional labels are scores to regress on.
    return task == "text-classification" and column_types.get(data.label_column) == "float"
