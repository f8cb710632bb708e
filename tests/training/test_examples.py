"""The README's example specs and data files: each spec is valid, and each task's example data
goes through the worker's loading, checks and tokenization for that spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from app.jobs.spec import JobSpec
from tests.training.helpers import RecordingSink, data_files
from worker.training.data import prepare_data
from worker.training.model import load_model
from worker.training.tasks import recipe_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Each example spec, its example data, and the tiny model family that stands in for its model.
SPEC_DATA = {
    "question-answering.json": ("question-answering.jsonl", "bert"),
    "seq2seq.json": ("seq2seq.jsonl", "bart"),
    "chat.json": ("chat.jsonl", "gpt2"),
    "causal-lm.json": ("causal-lm.jsonl", "gpt2"),
    "masked-lm.json": ("masked-lm.jsonl", "bert"),
}


@pytest.mark.parametrize("path", sorted((EXAMPLES / "specs").iterdir()), ids=lambda p: p.name)
def test_every_example_spec_is_valid(path: Path) -> None:
    spec = (yaml.safe_load if path.suffix == ".yaml" else json.loads)(path.read_text())
    JobSpec.model_validate(spec).resolved()


@pytest.mark.parametrize("spec_name", sorted(SPEC_DATA))
def test_example_data_fits_its_spec(spec_name: str, tmp_path: Path, tiny_bert: Path,
                                    tiny_gpt2: Path, tiny_bart: Path) -> None:
    data_name, family = SPEC_DATA[spec_name]
    spec = json.loads((EXAMPLES / "specs" / spec_name).read_text())
    # A handful of rows leaves nothing to hold out; the shape of the data is what counts.
    spec["dataset"].pop("validation_split", None)
    spec.pop("early_stopping", None)
    spec.pop("lora", None)
    job = JobSpec.model_validate(spec).resolved()
    model = {"bert": tiny_bert, "gpt2": tiny_gpt2, "bart": tiny_bart}[family]
    sink = RecordingSink()
    prepared = prepare_data(job, data_files(EXAMPLES / "data" / data_name),
                            cache_dir=tmp_path, events=sink)
    tokenizer = load_model(job, str(model), prepared.label_names, events=sink).tokenizer
    [train] = recipe_for(job).tokenize(prepared, tokenizer, job).values()
    assert len(train) >= len(prepared.train) > 0
    assert sink.data_of("dataset_loaded")[0]["dropped_rows"] == {"train": 0}
