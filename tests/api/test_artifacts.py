from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from transformers import AutoConfig

from app.artifacts.service import publish_model
from app.storage import LocalStorage
from tests.api.helpers import assert_error, job_spec, sentiment_dataset, start_job
from tests.factories import write_tiny_bert


def test_manifest_lists_every_file_with_its_hash(api: TestClient,
                                                 finished_job: dict[str, Any]) -> None:
    listed = api.get(f"/v1/jobs/{finished_job['id']}/artifacts").json()["data"]
    paths = {a["path"] for a in listed}
    assert {"config.json", "model.safetensors", "metrics.json"} <= paths
    model_dir = api.app.state.storage.job_model_dir(finished_job["id"])
    for artifact in listed:
        data = (model_dir / artifact["path"]).read_bytes()
        assert artifact["size_bytes"] == len(data)
        assert artifact["sha256"] == hashlib.sha256(data).hexdigest()


def test_file_download_with_length_and_range(api: TestClient,
                                             finished_job: dict[str, Any]) -> None:
    url = f"/v1/jobs/{finished_job['id']}/artifacts/metrics.json"
    whole = api.get(url)
    assert whole.status_code == 200
    assert whole.content == b'{"eval_accuracy": 1.0}'
    assert whole.headers["content-length"] == str(len(whole.content))
    part = api.get(url, headers={"Range": "bytes=2-14"})
    assert part.status_code == 206
    assert part.content == whole.content[2:15]
    assert part.headers["content-range"] == f"bytes 2-14/{len(whole.content)}"
    assert_error(api.get(url, headers={"Range": "bytes=500-600"}), 416,
                 "range_not_satisfiable")


@pytest.mark.parametrize("path", [
    "../secret.txt", "..%2Fsecret.txt", "%2e%2e/secret.txt", "%2e%2e%2fsecret.txt",
    "..%5csecret.txt", "/etc/passwd", "%2Fetc%2Fpasswd", "nested/../../secret.txt",
    "does-not-exist.json", "%00config.json",
])
def test_paths_outside_the_model_are_404(api: TestClient, finished_job: dict[str, Any],
                                         path: str) -> None:
    response = api.get(f"/v1/jobs/{finished_job['id']}/artifacts/{path}")
    assert response.status_code == 404, (path, response.status_code)
    assert b"not yours" not in response.content
    assert response.json()["error"]["code"] == "not_found"


def test_a_link_planted_in_the_model_folder_is_not_followed(
        api: TestClient, finished_job: dict[str, Any]) -> None:
    storage = api.app.state.storage
    model_dir = storage.job_model_dir(finished_job["id"])
    (model_dir / "escape.txt").symlink_to(storage.job_dir(finished_job["id"]) / "secret.txt")
    (model_dir / "passwd").symlink_to("/etc/passwd")
    (model_dir / "up").symlink_to(storage.root)
    for path in ("escape.txt", "passwd", "up/jobs", f"up/jobs/{finished_job['id']}/secret.txt"):
        response = api.get(f"/v1/jobs/{finished_job['id']}/artifacts/{path}")
        assert_error(response, 404, "not_found")
        assert b"not yours" not in response.content and b"root:" not in response.content


def test_published_models_and_archives_hold_no_links(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private.txt").write_text("not yours")
    trained = write_tiny_bert(storage.job_work_dir("job_x") / "model")
    (trained / "private.txt").symlink_to(outside / "private.txt")
    (trained / "folder").symlink_to(outside, target_is_directory=True)
    manifest = publish_model(storage, "job_x", trained)
    assert {a.path for a in manifest}.isdisjoint({"private.txt", "folder/private.txt"})
    with tarfile.open(storage.model_archive_path("job_x")) as tar:
        members = tar.getmembers()
    assert all(member.isfile() for member in members)
    assert not [m for m in members if "private" in m.name]


def test_model_archive_loads_with_from_pretrained(api: TestClient, tmp_path: Path,
                                                  finished_job: dict[str, Any]) -> None:
    response = api.get(f"/v1/jobs/{finished_job['id']}/model")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/gzip"
    assert int(response.headers["content-length"]) == len(response.content)
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        names = tar.getnames()
        assert all(name.startswith("model/") for name in names)
        tar.extractall(tmp_path / "download", filter="data")
    config = AutoConfig.from_pretrained(tmp_path / "download" / "model")
    assert config.model_type == "bert"


def test_cancel_running_then_finished(api: TestClient, tmp_path: Path,
                                      finished_job: dict[str, Any]) -> None:
    assert_error(api.post(f"/v1/jobs/{finished_job['id']}/cancel"), 409,
                 "job_already_finished")
    dataset = sentiment_dataset(api, tmp_path)
    running = api.post("/v1/jobs", json=job_spec(dataset["id"])).json()
    start_job(api, running["id"])
    for _ in range(2):  # cancel is idempotent while the worker stops the job
        response = api.post(f"/v1/jobs/{running['id']}/cancel")
        assert response.status_code == 200
        assert response.json()["status"] == "cancelling"
    kinds = [e["kind"] for e in api.get(f"/v1/jobs/{running['id']}/events").json()["data"]]
    assert kinds == ["queued", "cancelling"]
