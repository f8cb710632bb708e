"""Each task is declared once (app/jobs/tasks/) and trained by its recipe
(worker/training/tasks/): the two registries name the same tasks."""

from __future__ import annotations

from typing import get_args

import pytest

from app.jobs.spec import DatasetSpec, Hyperparameters, JobSpec
from app.jobs.tasks import DECLARATIONS, TASK_NAMES
from app.jobs.tasks.declaration import TaskDeclaration
from worker.training.tasks import MULTI_LABEL, recipe_for, recipes

# The sections of the spec a task's own fields are in.
SECTIONS = {"dataset": DatasetSpec, "hyperparameters": Hyperparameters}


def test_each_declared_task_has_a_recipe_and_each_recipe_a_declared_task() -> None:
    by_key = recipes()

    assert {recipe.task.name for recipe in by_key.values()} == set(DECLARATIONS)
    assert set(DECLARATIONS) <= set(by_key)
    for key, recipe in by_key.items():
        assert recipe.task is DECLARATIONS[recipe.task.name], key
        assert key in (recipe.task.name, MULTI_LABEL), key


def test_the_spec_takes_the_declared_tasks_in_their_order() -> None:
    assert get_args(JobSpec.model_fields["task"].annotation) == TASK_NAMES


@pytest.mark.parametrize("task", DECLARATIONS.values(), ids=TASK_NAMES)
def test_a_declaration_names_real_spec_fields(task: TaskDeclaration) -> None:
    for path in task.fields:
        section, name = path.split(".")
        assert name in SECTIONS[section].model_fields, path


@pytest.mark.parametrize("task", TASK_NAMES)
def test_the_recipe_of_a_spec_trains_its_task(task: str) -> None:
    spec = JobSpec.model_validate({"task": task, "model": "tiny/bert",
                                   "dataset": {"train": "ds_1"}})
    assert recipe_for(spec).task.name == task


def test_multi_label_is_text_classifications_option() -> None:
    spec = JobSpec.model_validate({"task": "text-classification", "model": "tiny/bert",
                                   "dataset": {"train": "ds_1", "multi_label": True}})

    assert recipe_for(spec) is recipes()[MULTI_LABEL]
    assert recipe_for(spec).task.name == "text-classification"
    assert spec.metric_names()[0] == "f1_micro"
