"""The main user journey, shared by the production-path and embedded-default tests."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from transformers import pipeline

from tests.conftest import TINY_MODEL
from tests.e2e.service import Service
from tests.factories import sentiment_rows, write_rows

LABELS = ("negative", "positive")


def classic_spec(train_id: str, test_id: str) -> dict[str, Any]:
    return {"task": "text-classification", "model": TINY_MODEL, "name": "sentiment",
            "dataset": {"train": train_id, "test": test_id, "validation_split": 0.2},
            "hyperparameters": {"epochs": 4, "batch_size": 16, "learning_rate": 3e-3,
                                "warmup_steps": 5, "weight_decay": 0.01, "seed": 7},
            "logging_steps": 5}


def train_download_predict(service: Service, tmp_path: Path) -> dict[str, Any]:
    """Upload, submit, follow to success, download the archive, predict with `pipeline`."""
    train = service.upload(write_rows(tmp_path / "train.csv", sentiment_rows(240, seed=1)))
    test = service.upload(write_rows(tmp_path / "test.jsonl", sentiment_rows(40, seed=2)))
    job = service.submit(classic_spec(train["id"], test["id"]))
    assert job["status"] == "queued"
    running = service.wait_for(job["id"], ("running", "succeeded"))
    finished = service.wait_for(job["id"])
    assert finished["status"] == "succeeded", finished["error"]
    assert running["started_at"] is not None and finished["finished_at"] is not None
    assert finished["progress"]["percent"] == 100.0
    assert finished["progress"]["step"] == finished["progress"]["total_steps"] > 0
    final = finished["metrics"]["final"]
    assert final["eval_accuracy"] >= 0.8 and final["test_accuracy"] >= 0.8, final

    events = service.client.get(f"/v1/jobs/{job['id']}/events").json()["data"]
    kinds = [event["kind"] for event in events]
    for kind in ("queued", "started", "dataset_loaded", "model_loaded", "evaluation", "epoch",
                 "saved", "succeeded"):
        assert kind in kinds, kinds
    assert kinds[0] == "queued" and kinds[-1] == "succeeded"
    loaded = next(event for event in events if event["kind"] == "model_loaded")["data"]
    assert loaded["trainable_parameters"] == loaded["total_parameters"] > 0

    series = service.client.get(f"/v1/jobs/{job['id']}/metrics").json()["series"]
    assert len(series["loss"]) >= 4 and len(series["learning_rate"]) >= 4
    assert len(series["eval_accuracy"]) == 4  # one evaluation per epoch

    listed = service.client.get(f"/v1/jobs/{job['id']}/artifacts").json()["data"]
    assert {"model.safetensors", "config.json", "metrics.json", "README.md",
            "trainer_state.json", "training_args.json"} <= {a["path"] for a in listed}
    config = next(a for a in listed if a["path"] == "config.json")
    body = service.client.get(f"/v1/jobs/{job['id']}/artifacts/config.json").content
    assert hashlib.sha256(body).hexdigest() == config["sha256"]

    model = service.download_model(job["id"], tmp_path / "download")
    classifier = pipeline("text-classification", model=str(model))
    unseen = sentiment_rows(60, seed=99)
    predictions = classifier([row["text"] for row in unseen])
    assert {p["label"] for p in predictions} <= set(LABELS)
    correct = sum(p["label"] == row["label"] for p, row in zip(predictions, unseen, strict=True))
    assert correct / len(unseen) >= 0.8
    return finished


def train_with_validation(service: Service, tmp_path: Path, spec: dict[str, Any],
                          train_rows: list[dict[str, Any]],
                          validation_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Upload both row sets as JSON Lines, run `spec` on them, follow it to success; answers
    the finished job."""
    train = service.upload(write_rows(tmp_path / "train.jsonl", train_rows))
    validation = service.upload(write_rows(tmp_path / "validation.jsonl", validation_rows))
    dataset = {**spec.get("dataset", {}), "train": train["id"], "validation": validation["id"]}
    job = service.submit({**spec, "dataset": dataset})
    finished = service.wait_for(job["id"])
    assert finished["status"] == "succeeded", finished["error"]
    return finished
