"""The spec's compute section over HTTP: its defaults are stored, bad values are 422s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import assert_error, job_spec, sentiment_dataset


def test_defaults_are_stored_with_the_job(api: TestClient, tmp_path: Path) -> None:
    job = api.post("/v1/jobs", json=job_spec(sentiment_dataset(api, tmp_path)["id"]))

    assert job.status_code == 201, job.text
    assert job.json()["spec"]["compute"] == {
        "precision": "auto", "gradient_checkpointing": False, "attention": "auto",
        "compile": False, "length_grouping": "auto", "packing": "auto", "gpus": 1,
        "gpu_type": None, "distributed": "auto"}


@pytest.mark.parametrize(("compute", "code", "param"), [
    ({"precision": "fp8"}, "invalid_request", "compute.precision"),
    ({"attention": "flash_attention_3"}, "invalid_request", "compute.attention"),
    ({"length_grouping": "sometimes"}, "invalid_request", "compute.length_grouping"),
    ({"packing": 2}, "invalid_request", "compute.packing"),
    ({"gradient_checkpointing": "maybe"}, "invalid_request", "compute.gradient_checkpointing"),
    ({"tf32": True}, "unknown_field", "compute.tf32"),
    ({"gpu_type": "H100 80GB"}, "invalid_request", "compute.gpu_type"),
    ({"distributed": "fsdp"}, "invalid_request", "compute.distributed"),
])
def test_bad_compute_values_are_refused(api: TestClient, tmp_path: Path,
                                        compute: dict[str, Any], code: str, param: str) -> None:
    spec = job_spec(sentiment_dataset(api, tmp_path)["id"], compute=compute)

    assert_error(api.post("/v1/jobs", json=spec), 422, code, param)


def test_packing_is_for_causal_lm_only(api: TestClient, tmp_path: Path) -> None:
    dataset = sentiment_dataset(api, tmp_path)["id"]
    packed = job_spec(dataset, compute={"packing": True})

    error = assert_error(api.post("/v1/jobs", json=packed), 422, "invalid_request",
                         "compute.packing")
    assert "causal-lm" in error["message"]
    unpacked = api.post("/v1/jobs", json=job_spec(dataset, compute={"packing": False}))
    assert unpacked.status_code == 201, unpacked.text


def test_sharding_keeps_the_whole_model_nowhere_so_lora_is_refused(api: TestClient,
                                                                   tmp_path: Path) -> None:
    dataset = sentiment_dataset(api, tmp_path)["id"]
    sharded = {"distributed": "fsdp", "gpus": 2}

    error = assert_error(api.post("/v1/jobs", json=job_spec(dataset, compute=sharded, lora={})),
                         422, "invalid_request", "compute.distributed")
    assert "ddp" in error["message"]
    accepted = api.post("/v1/jobs", json=job_spec(dataset, compute=sharded))
    assert accepted.status_code == 201, accepted.text
