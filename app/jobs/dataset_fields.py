"""The dataset fields of a job read off its training data: a job that sets none of its task's
dataset fields gets those of the uploaded train dataset's layout (app/datasets/fits.py), so that
`{"task", "model", "dataset": {"train"}}` runs on a SQuAD file or an Alpaca file as uploaded.
"""

from __future__ import annotations

from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.auth import Caller
from app.datasets.fits import task_fits
from app.datasets.layouts import LAYOUTS
from app.errors import InvalidRequest
from app.jobs.spec import JobSpec
from app.jobs.tasks import DECLARATIONS
from app.models import Dataset
from app.params import is_id


def project_dataset(session: Session, caller: Caller, dataset_id: str, role: str) -> Dataset:
    """The caller's project's dataset `dataset_id`; even an admin's job reads only its own
    project's data (422 otherwise)."""
    dataset = session.get(Dataset, dataset_id) if is_id(dataset_id) else None
    if dataset is None or dataset.project_id != caller.project_id:
        raise InvalidRequest(f"no dataset with id {dataset_id}", code="dataset_not_found",
                             param=f"dataset.{role}")
    return dataset


def with_dataset_fields(session: Session, caller: Caller, spec: JobSpec) -> JobSpec:
    """`spec` with its train dataset's fields for its task, when it sets none of them."""
    if spec.dataset.train is None:
        return spec
    own = {name.removeprefix("dataset.") for name in DECLARATIONS[spec.task].fields
           if name.startswith("dataset.")}
    if own & spec.dataset.model_fields_set:
        return spec
    train = project_dataset(session, caller, spec.dataset.train, "train")
    fields = fitting_fields(train).get(spec.task)
    if not fields:
        return spec
    submitted = spec.model_dump(mode="json", exclude_unset=True)
    submitted["dataset"] = {**submitted["dataset"], **fields}
    try:
        return JobSpec.model_validate(submitted)
    except ValidationError as exc:  # a rule the layout's fields and the spec's own break together
        error = exc.errors()[0]
        cause = error.get("ctx", {}).get("error")
        raise InvalidRequest(f"{cause or error['msg']} (with the dataset fields of {train.id}: "
                             f"{_named(fields)})", param=getattr(cause, "param", None)) from None


def fitting_fields(dataset: Dataset) -> dict[str, dict[str, object]]:
    return task_fits(dataset.layout, {column["name"]: column["type"]
                                      for column in dataset.columns}, dataset.layout_details)


def layout_hint(dataset: Dataset) -> str:
    """What `dataset` was recognised as and what it fits, for a 422 on its columns."""
    layout = LAYOUTS[dataset.layout]
    fitting = fitting_fields(dataset)
    if dataset.layout == "preference":
        fit = ("which is for preference tuning; no task of this service trains on preference "
               "pairs yet")
    elif fitting:
        fit = "which fits " + ", ".join(
            f"{task} (with {_named(fields)})" if fields else task
            for task, fields in fitting.items())
    else:
        fit = "which fits no task under the default column names"
    return f" Dataset {dataset.id} was read as {layout.title} (layout '{layout.name}'), {fit}."


def _named(fields: dict[str, object]) -> str:
    return ", ".join(f"dataset.{name} {value!r}" for name, value in fields.items())
