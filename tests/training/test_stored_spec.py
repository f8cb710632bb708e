"""A job queued by the previous release runs on this one: the trainer child in job mode reads
a spec stored at version 1, with a field removed since and with values a rule refuses today.

Each case is a job row in a migrated SQLite database, trained by `python -m worker.runner
--job-id ID --attempt 0` on the tiny BERT of the test catalog, as the worker starts it.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess  # nosec B404
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from app import migrate
from app.db import transaction
from app.models import Job, Project
from app.storage import LocalStorage
from tests.conftest import TINY_MODEL
from tests.factories import stored_sentiment_dataset
from worker.runner import OUTCOME_FILE

ROOT = Path(__file__).resolve().parents[2]

# A text-classification spec as the previous release stored it (spec version 1):
# `spec.resolved().model_dump(mode="json")`, every default filled in. Frozen: do not update it
# when the spec changes, that is what it tests.
SPEC_V1: dict[str, Any] = {
    "task": "text-classification",
    "model": TINY_MODEL,
    "dataset": {
        "train": "DATASET_ID", "validation": None, "test": None, "hub": None,
        "validation_split": 0.25, "test_split": None, "text_column": "text",
        "text_pair_column": None, "label_column": "label", "multi_label": False,
        "tokens_column": "tokens", "tags_column": "tags", "label_all_subtokens": False,
        "prompt_column": None, "completion_column": None, "messages_column": None,
        "question_column": "question", "context_column": "context",
        "answers_column": "answers", "answer_column": None, "answer_start_column": None,
        "allow_unanswerable": False, "source_column": "source", "target_column": "target",
        "source_prefix": None,
    },
    "hyperparameters": {
        "epochs": 2.0, "max_steps": None, "learning_rate": 0.005, "batch_size": 16,
        "eval_batch_size": 64, "gradient_accumulation_steps": 1, "warmup_steps": 0,
        "warmup_ratio": None, "weight_decay": 0.0, "max_seq_length": 128,
        "lr_scheduler": "linear", "optimizer": "adamw", "seed": 42,
        "multi_label_threshold": None, "mlm_probability": None,
        "train_on_completion_only": None, "doc_stride": None, "max_answer_length": None,
        "max_target_length": None, "generation_max_length": None, "num_beams": None,
    },
    "freeze": {"embeddings": False, "bottom_layers": 0, "encoder": False},
    "evaluation": {"strategy": "epoch", "steps": None, "metric_for_best_model": None,
                   "keep_best_model": False},
    "lora": None,
    "early_stopping": None,
    "logging_steps": 5,
    "name": None,
    "max_attempts": 3,
    "checkpoint_steps": None,
    "max_runtime_seconds": None,
    "max_queue_seconds": None,
}


def _with_removed_fields(spec: dict[str, Any]) -> None:
    # Fields a later release dropped, at the top and inside a section.
    spec["gpu"] = "any"
    spec["dataset"]["shuffle_buffer"] = 1000


def _breaking_todays_rules(spec: dict[str, Any]) -> None:
    # Both refused by today's cross-field rules (another task's field; a threshold without
    # multi_label), as a rule tightened after the job was queued would be.
    spec["hyperparameters"]["num_beams"] = 4
    spec["hyperparameters"]["multi_label_threshold"] = 0.3


@pytest.mark.parametrize("edit", [None, _with_removed_fields, _breaking_todays_rules],
                         ids=["as-stored", "removed-fields", "rules-tightened-since"])
def test_a_job_stored_at_version_1_trains_and_succeeds(tmp_path: Path, model_catalog: Path,
                                                       edit: Any) -> None:
    database_url = f"sqlite:///{tmp_path / 'service.sqlite'}"
    migrate.upgrade(database_url)
    storage = LocalStorage(tmp_path / "storage")
    engine = create_engine(database_url)
    try:
        with transaction(sessionmaker(engine)) as session:
            project = Project(name="team-a")
            session.add(project)
            session.flush()
            dataset = stored_sentiment_dataset(session, storage, project.id)
            spec = copy.deepcopy(SPEC_V1)
            spec["dataset"]["train"] = dataset.id
            if edit is not None:
                edit(spec)
            job = Job(project_id=project.id, status="running", spec=spec, spec_version=1)
            session.add(job)
            session.flush()
            job_id = job.id
    finally:
        engine.dispose()

    child = subprocess.run(  # nosec B603
        [sys.executable, "-m", "worker.runner", "--job-id", job_id, "--attempt", "0"],
        cwd=ROOT,
        env={**os.environ, "FT_DATABASE_URL": database_url,
             "FT_STORAGE_DIR": str(storage.root), "FT_MODELS_DIR": str(model_catalog)},
        capture_output=True, text=True, timeout=600, check=False)

    assert child.returncode == 0, child.stderr[-3000:]
    outcome = json.loads((storage.job_work_dir(job_id) / OUTCOME_FILE).read_text())
    assert outcome["status"] == "succeeded", outcome
    assert outcome["metrics"]["train_loss"] > 0
    assert "eval_f1" in outcome["metrics"]
