"""The dry run against the real thing: its steps are the steps `run_training` takes, its
parameter counts those of the loaded model, and every bad dataset gets its warning or the
job's own error code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.jobs.spec import Hyperparameters
from tests.factories import (
    entity_rows,
    multi_label_rows,
    pickled_model,
    qa_rows,
    sentiment_rows,
    seq2seq_rows,
    write_rows,
)
from tests.training.helpers import RecordingSink, data_files, make_spec
from worker.training.dry_run import batched_tokens, dry_run, training_steps
from worker.training.model import load_model
from worker.training.trainer import run_training

PROMPTS = [{"prompt": f"what colour are {topic} ?", "completion": f" {colour}"}
           for topic, colour in (("cats", "grey"), ("dogs", "brown"), ("rain", "blue"))] * 9
CHATS = [{"messages": [{"role": "user", "content": row["prompt"]},
                       {"role": "assistant", "content": row["completion"]}]} for row in PROMPTS]


def _texts(n: int) -> list[dict[str, Any]]:
    return [{"text": row["text"]} for row in sentiment_rows(n)]


# (task, model fixture, rows, file name, spec fields): one real run each, tiny and short.
CASES = {
    "classification-accumulated-fractional": (
        "text-classification", "tiny_bert", sentiment_rows(45), "train.csv",
        {"hyperparameters": {"batch_size": 4, "gradient_accumulation_steps": 3,
                             "epochs": 1.5}, "dataset": {"validation_split": 0.2}}),
    "token-classification-max-steps": (
        "token-classification", "tiny_bert", entity_rows(30), "train.jsonl",
        {"hyperparameters": {"batch_size": 8, "max_steps": 5}}),
    "causal-lm-packed": (
        "causal-lm", "tiny_gpt2", _texts(120), "train.jsonl",
        {"model": "tiny-gpt2", "hyperparameters": {"batch_size": 2, "max_seq_length": 16,
                                                   "epochs": 1}}),
    "causal-lm-prompts": (
        "causal-lm", "tiny_gpt2", PROMPTS, "train.jsonl",
        {"model": "tiny-gpt2", "hyperparameters": {"batch_size": 4, "epochs": 1,
                                                   "gradient_accumulation_steps": 2},
         "dataset": {"prompt_column": "prompt", "completion_column": "completion"}}),
    "masked-lm": ("masked-lm", "tiny_bert", _texts(30), "train.jsonl",
                  {"hyperparameters": {"batch_size": 8, "epochs": 0.5}}),
    "multi-label": ("text-classification", "tiny_bert", multi_label_rows(30), "train.jsonl",
                    {"hyperparameters": {"batch_size": 8, "epochs": 1},
                     "dataset": {"multi_label": True, "label_column": "labels"}}),
    # Short windows: many contexts become two windows, and the steps follow the windows.
    "question-answering-windows": (
        "question-answering", "tiny_bert", qa_rows(40), "train.jsonl",
        {"hyperparameters": {"batch_size": 4, "epochs": 1, "max_seq_length": 16,
                             "doc_stride": 4}}),
    "seq2seq": ("seq2seq", "tiny_bart", seq2seq_rows(20), "train.jsonl",
                {"model": "tiny-bart", "hyperparameters": {"batch_size": 4, "epochs": 1}}),
    "causal-lm-chats": (
        "causal-lm", "tiny_gpt2", CHATS, "train.jsonl",
        {"model": "tiny-gpt2", "hyperparameters": {"batch_size": 4, "epochs": 1},
         "dataset": {"messages_column": "messages"}}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_step_count_is_the_real_jobs(case: str, tmp_path: Path, sink: RecordingSink,
                                         request: pytest.FixtureRequest) -> None:
    task, model_fixture, rows, filename, fields = CASES[case]
    model = str(request.getfixturevalue(model_fixture))
    spec = make_spec(task, **fields)
    files = data_files(write_rows(tmp_path / filename, rows))

    report = dry_run(spec, files, model)
    run_training(spec, files, model, tmp_path / "run", events=sink)

    assert report["valid"], report["errors"]
    state = json.loads((tmp_path / "run" / "model" / "trainer_state.json").read_text())
    assert report["steps"]["total_steps"] == state["global_step"] == state["max_steps"]
    loaded = sink.data_of("model_loaded")[-1]
    assert (report["parameters"]["total"], report["parameters"]["trainable"]) == (
        loaded["total_parameters"], loaded["trainable_parameters"])


@pytest.mark.parametrize(("task", "fields"), [
    ("text-classification", {"freeze": {"embeddings": True, "bottom_layers": 1}}),
    ("text-classification", {"freeze": {"encoder": True}}),
    ("text-classification", {"lora": {"r": 4}}),
    ("token-classification", {"lora": {"r": 2, "target_modules": ["query", "value"]}}),
    ("masked-lm", {"lora": {"r": 4}}),
])
def test_parameter_counts_are_the_loaded_models(task: str, fields: dict[str, Any],
                                                tmp_path: Path, tiny_bert: Path,
                                                sink: RecordingSink) -> None:
    rows = entity_rows(20) if task == "token-classification" else sentiment_rows(20)
    files = data_files(write_rows(tmp_path / "train.jsonl", rows))
    spec = make_spec(task, **fields)
    report = dry_run(spec, files, str(tiny_bert))
    labels = report["dataset"]["label_names"]
    load_model(spec.resolved(), str(tiny_bert), labels, events=sink)
    loaded = sink.data_of("model_loaded")[-1]
    parameters = report["parameters"]
    assert (parameters["total"], parameters["trainable"], parameters["architecture"]) == (
        loaded["total_parameters"], loaded["trainable_parameters"], loaded["architecture"])
    assert parameters["trainable"] < parameters["total"]
    memory = report["memory"]
    assert memory["gradients_bytes"] == 4 * parameters["trainable"]
    assert memory["optimizer_bytes"] == 2 * memory["gradients_bytes"]  # adamw


def _codes(problems: list[dict[str, str]]) -> list[str]:
    return [problem["code"] for problem in problems]


def test_warnings_for_data_that_trains_badly(tmp_path: Path, tiny_bert: Path) -> None:
    rows = sentiment_rows(40, labels=("negative", "positive", "neutral"))
    rare = [row for row in rows if row["label"] != "neutral"] + [
        row for row in rows if row["label"] == "neutral"][:2]
    train = write_rows(tmp_path / "train.csv", rare)
    validation = write_rows(tmp_path / "validation.csv", sentiment_rows(60, seed=3))
    spec = make_spec(dataset={"validation": "uploaded-validation"},
                     hyperparameters={"max_seq_length": 8})

    report = dry_run(spec, data_files(train, validation), str(tiny_bert))

    assert report["valid"]
    assert _codes(report["warnings"]) == ["rare_class", "validation_larger_than_train",
                                          "many_rows_truncated"]
    assert "'neutral' (2)" in report["warnings"][0]["message"]
    assert report["tokens"]["truncated_share"] == 1.0
    assert report["tokens"]["features"]["max"] == 8 < report["tokens"]["rows"]["max"]
    assert all(warning["hint"] for warning in report["warnings"])


def test_healthy_data_has_no_warnings(tmp_path: Path, tiny_bert: Path) -> None:
    files = data_files(write_rows(tmp_path / "train.csv", sentiment_rows(60)))
    report = dry_run(make_spec(dataset={"validation_split": 0.25}), files, str(tiny_bert))
    assert report["valid"] and report["warnings"] == []
    assert report["dataset"]["files"]["train"] == {"rows_read": 60, "rows_dropped": 0,
                                                   "rows_usable": 60}
    assert report["time"]["seconds_per_epoch"] >= 0 and report["time"]["device"] == "cpu"


@pytest.mark.parametrize(("rows", "fields", "code"), [
    (sentiment_rows(20), {"dataset": {"text_column": "body"}}, "dataset_invalid"),
    ([{"text": f"good film {i}", "label": "positive"} for i in range(20)], {},
     "dataset_invalid"),
    (sentiment_rows(20), {"freeze": {"bottom_layers": 5}}, "invalid_spec"),
])
def test_what_would_fail_the_job_is_an_error_with_its_code(
        rows: list[dict[str, Any]], fields: dict[str, Any], code: str, tmp_path: Path,
        tiny_bert: Path) -> None:
    files = data_files(write_rows(tmp_path / "train.csv", rows))
    report = dry_run(make_spec(**fields), files, str(tiny_bert))
    assert not report["valid"]
    [error] = report["errors"]
    assert error["code"] == code and error["message"] and error["hint"]


def test_pickle_weights_are_refused_as_a_job_refuses_them(tmp_path: Path,
                                                         tiny_bert: Path) -> None:
    marker = tmp_path / "pwned"
    model = pickled_model(tiny_bert, tmp_path / "pickled", marker)
    files = data_files(write_rows(tmp_path / "train.csv", sentiment_rows(20)))
    report = dry_run(make_spec(), files, str(model))
    assert _codes(report["errors"]) == ["unsafe_model_format"]
    assert not marker.exists()


def test_memory_follows_quantization_and_checkpointing(tmp_path: Path, tiny_bert: Path) -> None:
    files = data_files(write_rows(tmp_path / "train.csv", sentiment_rows(40)))

    def memory(**fields: Any) -> dict[str, Any]:
        report = dry_run(make_spec(**fields), files, str(tiny_bert))
        assert report["valid"], report["errors"]
        return report["memory"]

    lora, qlora = memory(lora={"r": 4}), memory(lora={"r": 4, "quantization": "4bit"})
    int8 = memory(lora={"r": 4, "quantization": "8bit"})
    # The blocks' frozen linear weights: 4 bytes each in fp32, 1 in 8 bits, half a byte in 4.
    quantized = (lora["weights_bytes"] - int8["weights_bytes"]) / 3
    assert quantized > 0 and qlora["weights_bytes"] == lora["weights_bytes"] - 3.5 * quantized
    assert qlora["quantization"] == "4bit" and lora["quantization"] is None
    assert qlora["gradients_bytes"] == lora["gradients_bytes"]

    # fp32 named: 'auto' is bf16 on CPUs with native bf16, and activations halve with it.
    plain = memory(compute={"precision": "fp32"})
    checkpointed = memory(compute={"precision": "fp32", "gradient_checkpointing": True})
    assert checkpointed["gradient_checkpointing"] and plain["precision"] == "fp32"
    assert checkpointed["activations_bytes"] < plain["activations_bytes"]
    assert checkpointed["weights_bytes"] == plain["weights_bytes"]


def test_batches_are_counted_with_their_padding() -> None:
    lengths = np.random.default_rng(0).integers(5, 120, size=1000)
    grouped = batched_tokens(lengths, 16, grouped=True, packed=False, seed=42)
    shuffled = batched_tokens(lengths, 16, grouped=False, packed=False, seed=42)
    assert batched_tokens(lengths, 16, grouped=False, packed=True, seed=42) == lengths.sum()
    assert lengths.sum() < grouped < 1.1 * lengths.sum() < shuffled
    assert shuffled == batched_tokens(lengths, 16, grouped=False, packed=False, seed=42)


def test_steps_count_each_ranks_share_of_the_rows() -> None:
    hyper = Hyperparameters(batch_size=8, epochs=2, gradient_accumulation_steps=2)
    # 41 rows over 2 ranks: 21 each (one repeated), 3 batches, 2 optimizer steps an epoch.
    steps = training_steps(41, hyper, 2)
    assert (steps["batches_per_epoch"], steps["steps_per_epoch"], steps["total_steps"]) == \
        (3, 2, 4)
    assert steps["effective_batch_size"] == 32 and steps["ranks"] == 2
