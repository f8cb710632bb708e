"""Spec files and `--set` overrides, without a service."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from app.client.spec import (
    SpecFileError,
    apply_overrides,
    load_spec,
    parse_assignment,
    set_path,
)
from app.jobs.spec import JobSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "specs"


@pytest.mark.parametrize(("text", "keys", "value"), [
    ("hyperparameters.learning_rate=3e-5", ["hyperparameters", "learning_rate"], 3e-5),
    ("hyperparameters.max_steps=4", ["hyperparameters", "max_steps"], 4),
    ("dataset.train=ds_123", ["dataset", "train"], "ds_123"),
    ("freeze.encoder=true", ["freeze", "encoder"], True),
    ("name=null", ["name"], None),
    ("name=", ["name"], ""),
    ('name="42"', ["name"], "42"),
    ("name=a=b", ["name"], "a=b"),
    ("tags=[1, 2]", ["tags"], [1, 2]),
    ("dataset.hub={\"hub\": \"glue\"}", ["dataset", "hub"], {"hub": "glue"}),
    ("name=NaN", ["name"], "NaN"),
    ("name=Infinity", ["name"], "Infinity"),
])
def test_an_assignment_is_json_when_it_parses_else_a_string(text: str, keys: list[str],
                                                            value: object) -> None:
    assert parse_assignment(text) == (keys, value)


@pytest.mark.parametrize("text", ["learning_rate", "=3", "a..b=1", ".a=1", "a.=1"])
def test_a_malformed_assignment_says_the_expected_form(text: str) -> None:
    with pytest.raises(SpecFileError, match="dotted.path=value"):
        parse_assignment(text)


def test_set_path_creates_mappings_and_refuses_to_descend_into_a_value() -> None:
    spec: dict[str, object] = {"task": "text-classification"}
    set_path(spec, ["evaluation", "strategy"], "steps")
    assert spec["evaluation"] == {"strategy": "steps"}
    with pytest.raises(SpecFileError, match="task is a str"):
        set_path(spec, ["task", "name"], "x")


def test_overrides_apply_named_options_then_each_set_in_order() -> None:
    spec = {"task": "text-classification", "model": "a",
            "dataset": {"train": "REPLACE", "text_column": "sentence"},
            "hyperparameters": {"epochs": 3, "batch_size": 32}}
    merged = apply_overrides(
        spec, model="b", epochs=1.5, name="run",
        assignments=["dataset.train=ds_1", "hyperparameters.learning_rate=3e-5",
                     "model=c", "hyperparameters.epochs=2"])
    assert merged == {"task": "text-classification", "model": "c", "name": "run",
                      "dataset": {"train": "ds_1", "text_column": "sentence"},
                      "hyperparameters": {"epochs": 2, "batch_size": 32,
                                          "learning_rate": 3e-5}}
    assert spec["dataset"] == {"train": "REPLACE", "text_column": "sentence"}


def test_specs_load_from_json_and_yaml(tmp_path: Path) -> None:
    spec = {"task": "text-classification", "model": "m", "dataset": {"train": "ds_1"}}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    (tmp_path / "s.yml").write_text(yaml.safe_dump(spec))
    assert load_spec(tmp_path / "s.json") == spec == load_spec(tmp_path / "s.yml")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.yaml", None, "spec file not found"),
    ("bad.json", '{"task": ', "is not valid JSON"),
    ("bad.yaml", "task: [unclosed", "is not valid YAML"),
    ("list.yaml", "- task\n- model\n", "must hold a mapping"),
    ("empty.yaml", "", "must hold a mapping"),
])
def test_unreadable_spec_files_say_what_is_wrong(tmp_path: Path, name: str, content: str | None,
                                                 message: str) -> None:
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(SpecFileError, match=message) as raised:
        load_spec(tmp_path / name)
    assert name in str(raised.value)


@pytest.mark.parametrize("name", ["sst2-minilm.yaml", "regression.json"])
def test_example_specs_are_valid_once_a_dataset_id_is_set(name: str) -> None:
    spec = apply_overrides(load_spec(EXAMPLES / name), assignments=["dataset.train=ds_1"])
    JobSpec.model_validate(spec)


def test_the_sst2_example_is_the_classic_recipe() -> None:
    spec = load_spec(EXAMPLES / "sst2-minilm.yaml")
    assert spec["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert spec["dataset"] == {"train": "REPLACE_WITH_DATASET_ID", "validation_split": 0.1,
                               "text_column": "sentence", "label_column": "label"}
    assert spec["hyperparameters"] == {"epochs": 1, "batch_size": 32, "learning_rate": 5e-5,
                                       "max_seq_length": 64, "warmup_ratio": 0.1}
    assert spec["evaluation"] == {"strategy": "steps", "steps": 100}
    assert spec["logging_steps"] == 25
