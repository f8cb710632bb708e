"""The stored spec is a versioned contract: the API validates strictly, the worker reads a
stored spec with `JobSpec.from_stored`, leniently and typed.

That the API refuses what a stored spec may carry, through HTTP, is in test_jobs.py
(unknown fields) and test_odd_input.py (the cross-field rules)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from app.jobs import spec as spec_module
from app.jobs.spec import SPEC_VERSION, HubDataset, JobSpec, Lora

BASE: dict[str, Any] = {"task": "text-classification", "model": "tiny/bert",
                        "dataset": {"train": "ds_1"}}
# Each breaks one of today's cross-field rules, as a rule tightened after a job was queued
# would: the API refuses them, a stored spec keeps them.
AGAINST_THE_RULES: list[dict[str, Any]] = [
    {**BASE, "hyperparameters": {"warmup_steps": 10, "warmup_ratio": 0.1}},
    {**BASE, "dataset": {"train": "ds_1", "validation": "ds_2", "validation_split": 0.2}},
    {**BASE, "evaluation": {"strategy": "epoch"}},
    {**BASE, "hyperparameters": {"num_beams": 4}},
    {**BASE, "lora": {}, "freeze": {"embeddings": True}},
    {**BASE, "evaluation": {"metric_for_best_model": "bleu"}},
    {**BASE, "compute": {"packing": True}},
]


def test_a_stored_spec_is_read_typed() -> None:
    spec = JobSpec.from_stored(
        {"task": "seq2seq", "model": "tiny/bart",
         "dataset": {"hub": {"hub": "org/data", "validation_split": "validation"}},
         "hyperparameters": {"epochs": "2", "batch_size": "8", "num_beams": 3},
         "lora": {"r": 4}}, 1)

    assert spec.hyperparameters.epochs == 2.0 and isinstance(spec.hyperparameters.epochs, float)
    assert spec.hyperparameters.batch_size == 8
    assert isinstance(spec.dataset.hub, HubDataset) and spec.dataset.hub.hub == "org/data"
    assert isinstance(spec.lora, Lora) and spec.lora.alpha == 16.0
    assert spec.dataset.has_validation
    # Fields the stored spec lacks (added since, say) take their defaults.
    assert spec.max_attempts == 3 and spec.evaluation.strategy is None


def test_fields_no_longer_known_are_ignored_at_every_level() -> None:
    stored = {**BASE, "gpu": "any", "dataset": {"train": "ds_1", "shuffle": True},
              "hyperparameters": {"batch_size": 4, "fp8": True}, "lora": {"r": 2, "bias": "all"}}

    spec = JobSpec.from_stored(stored, SPEC_VERSION)

    assert spec.hyperparameters.batch_size == 4 and spec.lora == Lora(r=2)
    assert "gpu" not in spec.model_dump()
    with pytest.raises(ValidationError) as refused:
        JobSpec.model_validate(stored)
    assert {error["loc"] for error in refused.value.errors()} == {
        ("gpu",), ("dataset", "shuffle"), ("hyperparameters", "fp8"), ("lora", "bias")}
    assert {error["type"] for error in refused.value.errors()} == {"extra_forbidden"}


@pytest.mark.parametrize("stored", AGAINST_THE_RULES)
def test_the_cross_field_rules_are_not_run_again(stored: dict[str, Any]) -> None:
    spec = JobSpec.from_stored(stored, SPEC_VERSION)

    assert spec.model_dump(exclude_unset=True) == stored
    with pytest.raises(ValidationError):
        JobSpec.model_validate(stored)


def test_each_fields_own_bounds_and_formats_still_apply() -> None:
    with pytest.raises(ValidationError, match="batch_size"):
        JobSpec.from_stored({**BASE, "hyperparameters": {"batch_size": 0}}, SPEC_VERSION)
    with pytest.raises(ValidationError, match="model"):
        JobSpec.from_stored({**BASE, "model": "../etc"}, SPEC_VERSION)


def test_every_older_version_has_an_upgrade_step() -> None:
    assert sorted(spec_module._UPGRADES) == list(range(1, SPEC_VERSION))


def test_a_spec_of_a_newer_release_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=f"version {SPEC_VERSION + 1}, newer than this"):
        JobSpec.from_stored(BASE, SPEC_VERSION + 1)

