"""Out of memory for real: a worker whose trainers are capped (FT_TRAINER_MEMORY_BYTES) runs
a job whose batch does not fit under the cap while half of it does. The job recovers by
itself and ends as a job that fit from the start would.

The model is tiny in parameters and huge in activations: sixteen attention heads over 512
tokens with eager attention keep every head's 512x512 probabilities for the backward pass,
about 65 MB a row. Two long rows among short ones: a batch of 16 padded to 512 tokens needs
about 1.1 GB above the trainer's ~0.65 GB baseline, a batch of 8 half of that (measured:
peak RSS 1.74 GB and 1.21 GB), so the cap sits between them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from tests.e2e.service import FAST_RECOVERY, Service, running_service
from tests.factories import GENERIC_WORDS, sentiment_rows, write_rows, write_tiny_bert

pytestmark = pytest.mark.e2e

MODEL = "tiny/wide-attention"
SEQUENCE = 512
CAP_BYTES = 1_500_000_000
LONG_ROWS = (21, 50)


def write_wide_attention_bert(folder: Path) -> None:
    write_tiny_bert(folder)  # the tiny tokenizer, then a backbone of another shape
    tokenizer = AutoTokenizer.from_pretrained(folder, model_max_length=SEQUENCE)
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=SEQUENCE,
                        pad_token_id=tokenizer.pad_token_id, hidden_size=16,
                        num_hidden_layers=2, num_attention_heads=16, intermediate_size=16,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def training_rows() -> list[dict[str, Any]]:
    rows = sentiment_rows(64, seed=3)
    words = random.Random(5)
    for index in LONG_ROWS:
        rows[index]["text"] += " " + " ".join(words.choice(GENERIC_WORDS)
                                              for _ in range(SEQUENCE))
    return rows


def spec(train_id: str, validation_id: str) -> dict[str, Any]:
    return {"task": "text-classification", "model": MODEL,
            "dataset": {"train": train_id, "validation": validation_id},
            "hyperparameters": {"max_steps": 6, "batch_size": 16, "learning_rate": 3e-3,
                                "max_seq_length": SEQUENCE, "eval_batch_size": 8, "seed": 7},
            # Eager attention keeps the probabilities (sdpa on CPU would not); no length
            # grouping, so that short batches come first and leave a checkpoint behind.
            "compute": {"attention": "eager", "length_grouping": False},
            "evaluation": {"strategy": "no"}, "checkpoint_steps": 1, "logging_steps": 1}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("models")
    write_wide_attention_bert(models / MODEL)
    return models


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, catalog: Path) -> Iterator[Service]:
    settings = {"FT_MODELS_DIR": str(catalog), "FT_TRAINER_MEMORY_BYTES": str(CAP_BYTES),
                **FAST_RECOVERY}
    with running_service(settings, tmp_path_factory.mktemp("capped")) as running:
        yield running


def test_a_batch_over_the_memory_cap_recovers_and_ends_as_if_it_had_fit(
        service: Service, catalog: Path, tmp_path: Path) -> None:
    train_path = write_rows(tmp_path / "train.jsonl", training_rows())
    validation_path = write_rows(tmp_path / "validation.jsonl", sentiment_rows(16, seed=4))
    job = service.submit(spec(service.upload(train_path)["id"],
                              service.upload(validation_path)["id"]))
    finished = service.wait_for(job["id"], timeout=600)
    assert finished["status"] == "succeeded", finished["error"]

    first, second = finished["attempts"]
    assert first["outcome"] == "out_of_memory" and first["error_code"] == "out_of_memory"
    assert second["outcome"] == "succeeded"
    assert second["resumed_from_step"] and second["resumed_from_step"] >= 1
    ran = [{key: attempt["settings"][key] for key in
            ("batch_size", "gradient_accumulation_steps", "gradient_checkpointing")}
           for attempt in finished["attempts"]]
    assert ran == [
        {"batch_size": 16, "gradient_accumulation_steps": 1, "gradient_checkpointing": False},
        {"batch_size": 8, "gradient_accumulation_steps": 2, "gradient_checkpointing": False}]
    assert second["settings"]["compute"]["attention"] == "eager"

    events = service.client.get(f"/v1/jobs/{job['id']}/events",
                                params={"limit": 1000}).json()["data"]
    failed = next(event for event in events if event["kind"] == "attempt_failed")
    assert "FT_TRAINER_MEMORY_BYTES" in failed["message"]
    changed = next(event for event in events if event["kind"] == "settings_changed")
    assert changed["data"]["to"]["batch_size"] == 8
    assert "resumed" in [event["kind"] for event in events]

    # As many optimizer steps as asked, and the metrics of a run that fit from the start.
    assert finished["progress"]["step"] == finished["progress"]["total_steps"] == 6
    state = service.client.get(f"/v1/jobs/{job['id']}/artifacts/trainer_state.json").json()
    assert state["global_step"] == state["max_steps"] == 6
    expected = uncapped_run(catalog, train_path, validation_path, tmp_path / "uncapped")
    got = finished["metrics"]["final"]
    assert abs(got["eval_loss"] - expected["eval_loss"]) < 1e-4, (got, expected)
    assert got["eval_accuracy"] == expected["eval_accuracy"]


def uncapped_run(catalog: Path, train: Path, validation: Path, out: Path) -> dict[str, Any]:
    """The same spec at batch 16 in this process, where nothing caps the memory."""
    from app.jobs.spec import JobSpec
    from app.models import new_id
    from tests.training.helpers import RecordingSink
    from worker.training.data import DataFile, DataFiles
    from worker.training.trainer import run_training

    reference = JobSpec.model_validate(spec(new_id("ds"), new_id("ds")))
    files = DataFiles(train=DataFile(train, "jsonl"), validation=DataFile(validation, "jsonl"))
    return run_training(reference, files, str(catalog / MODEL), out, events=RecordingSink())
