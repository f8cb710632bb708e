"""The tasks the service trains, each declared once, in a light module (no torch) that the
API and the worker both read: its dataset columns and their kinds, the spec fields that are
its own, the metrics its evaluations report and its default for choosing the best model, and
the defaults it fills in a resolved spec.

The worker's recipe for a task (worker/training/tasks/<task>.py) names its declaration and
adds the heavy part: the model class and head, batches, tokenizing and scoring. What adding a
task touches is in the docstring of worker/training/tasks/__init__.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.jobs.tasks import (
    causal_lm,
    masked_lm,
    question_answering,
    seq2seq,
    text_classification,
    text_regression,
    token_classification,
)
from app.jobs.tasks.columns import Column
from app.jobs.tasks.declaration import TaskDeclaration

if TYPE_CHECKING:
    from app.jobs.spec import JobSpec

# In the order the API lists them (the spec's `task`).
DECLARATIONS: dict[str, TaskDeclaration] = {task.name: task for task in (
    text_classification.TASK, text_regression.TASK, token_classification.TASK,
    question_answering.TASK, seq2seq.TASK, masked_lm.TASK, causal_lm.TASK)}
TASK_NAMES = tuple(DECLARATIONS)



def _tasks_by_field() -> dict[str, tuple[str, ...]]:
    tasks: dict[str, tuple[str, ...]] = {}
    for task in DECLARATIONS.values():
        for field in task.fields:
            tasks[field] = (*tasks.get(field, ()), task.name)
    return tasks


# Each spec field that only some tasks read, and those tasks.
TASK_FIELDS = _tasks_by_field()


def columns_read(spec: JobSpec) -> list[Column]:
    """The columns `spec`'s task reads from every split."""
    return DECLARATIONS[spec.task].columns(spec.dataset)
