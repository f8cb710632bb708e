"""Fixtures for the training tests: tiny models built once per session, an event recorder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.factories import write_tiny_bart, write_tiny_bert, write_tiny_gpt2
from tests.training.helpers import RecordingSink

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models on few cores: extra threads only contend (100x slower on a 2-core runner).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    families = ("bert", "roberta", "distilbert", "electra")
    return {family: write_tiny_bert(root / family, family=family) for family in families}


@pytest.fixture(scope="session")
def tiny_bert(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["bert"]


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gpt2(tmp_path_factory.mktemp("models") / "gpt2")


@pytest.fixture(scope="session")
def tiny_bart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bart(tmp_path_factory.mktemp("models") / "bart")


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()
