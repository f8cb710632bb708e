"""The API on an S3-compatible store: uploads go to the bucket, downloads come from it."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.storage.s3 import S3Storage
from tests.api.helpers import (
    assert_error,
    job_with_published_model,
    sentiment_dataset,
    upload_file,
)
from tests.factories import sentiment_rows, write_rows
from tests.storage.gate import Gate


def objects(storage: S3Storage, under: str = "") -> dict[str, Any]:
    listed = storage.client.list_objects_v2(Bucket=storage.bucket,
                                            Prefix=storage.key(under) if under else storage.prefix)
    return {item["Key"].removeprefix(storage.prefix): item for item in listed.get("Contents", [])}


def test_an_upload_lands_in_the_bucket_with_its_sha256(api: TestClient, tmp_path: Path) -> None:
    storage: S3Storage = api.app.state.storage
    source = write_rows(tmp_path / "train.csv", sentiment_rows(40))
    dataset = upload_file(api, source).json()
    key = f"datasets/{dataset['id']}/data.csv"
    assert list(objects(storage)) == [key]
    head = storage.client.head_object(Bucket=storage.bucket, Key=storage.key(key))
    assert head["Metadata"]["sha256"] == dataset["sha256"] == \
        hashlib.sha256(source.read_bytes()).hexdigest()
    assert list((storage.root / "tmp").iterdir()) == []
    assert not (storage.root / "datasets").exists()  # the local folder is no store now
    assert storage.client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads") is None


def test_a_preview_fetches_the_file_into_an_empty_cache(api: TestClient, tmp_path: Path) -> None:
    storage: S3Storage = api.app.state.storage
    dataset = sentiment_dataset(api, tmp_path)
    shutil.rmtree(storage.root / "cache")  # another API machine: nothing local
    rows = api.get(f"/v1/datasets/{dataset['id']}/preview", params={"limit": 3}).json()["rows"]
    assert rows == [{k: str(v) for k, v in row.items()} for row in sentiment_rows(40)[:3]]
    assert [p.name for p in (storage.root / "cache").iterdir()] == [dataset["sha256"]]


def test_file_content_streams_with_range_and_redirects_when_asked(api: TestClient,
                                                                 tmp_path: Path) -> None:
    source = write_rows(tmp_path / "train.csv", sentiment_rows(40))
    dataset = upload_file(api, source).json()
    content = source.read_bytes()
    url = f"/v1/files/{dataset['id']}/content"
    whole = api.get(url)
    assert whole.status_code == 200 and whole.content == content
    assert whole.headers["content-length"] == str(len(content))
    part = api.get(url, headers={"Range": "bytes=-10"})
    assert part.status_code == 206 and part.content == content[-10:]
    assert part.headers["content-range"] == f"bytes {len(content) - 10}-{len(content) - 1}/" \
                                            f"{len(content)}"
    redirect = api.get(url, params={"redirect": "true"}, follow_redirects=False)
    assert redirect.status_code == 307
    location = httpx.URL(redirect.headers["location"])
    fetched = httpx.get(location)
    assert fetched.status_code == 200 and fetched.content == content
    # S3 answers it as Content-Disposition (moto does not): the name survives the redirect.
    assert location.params["response-content-disposition"].endswith("train.csv")


def test_deleting_a_dataset_deletes_its_object(api: TestClient, tmp_path: Path) -> None:
    storage: S3Storage = api.app.state.storage
    dataset = sentiment_dataset(api, tmp_path)
    assert api.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
    assert objects(storage) == {}


@pytest.fixture
def published_job(api: TestClient, tmp_path: Path) -> dict[str, Any]:
    """A succeeded job whose model the worker put in the store; nothing of it is local."""
    storage: S3Storage = api.app.state.storage
    job = job_with_published_model(api, tmp_path)
    job["archive"] = storage.model_archive_path(job["id"]).read_bytes()
    shutil.rmtree(storage.job_dir(job["id"]))
    return job


def test_the_model_and_its_files_come_from_the_store(api: TestClient,
                                                     published_job: dict[str, Any]) -> None:
    job_id, archive = published_job["id"], published_job["archive"]
    storage: S3Storage = api.app.state.storage
    listed = api.get(f"/v1/jobs/{job_id}/artifacts").json()["data"]
    assert {f"jobs/{job_id}/model/{a['path']}" for a in listed} | {f"jobs/{job_id}/model.tar.gz"} \
        == {key for key in objects(storage, f"jobs/{job_id}")}
    model = api.get(f"/v1/jobs/{job_id}/model")
    assert model.status_code == 200 and model.content == archive
    assert model.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(model.content), mode="r:gz") as tar:
        assert "model/config.json" in tar.getnames()
    part = api.get(f"/v1/jobs/{job_id}/model", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == archive[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(archive)}"
    assert_error(api.get(f"/v1/jobs/{job_id}/model", headers={"Range": f"bytes={len(archive)}-"}),
                 416, "range_not_satisfiable")
    metrics = api.get(f"/v1/jobs/{job_id}/artifacts/metrics.json")
    assert metrics.content == b'{"eval_accuracy": 1.0}'
    assert_error(api.get(f"/v1/jobs/{job_id}/artifacts/../model.tar.gz"), 404, "not_found")


def test_a_redirect_is_a_short_lived_presigned_url(api: TestClient,
                                                   published_job: dict[str, Any]) -> None:
    answer = api.get(f"/v1/jobs/{published_job['id']}/model", params={"redirect": "true"},
                     follow_redirects=False)
    assert answer.status_code == 307
    location = httpx.URL(answer.headers["location"])
    assert location.params["X-Amz-Expires"] == str(api.app.state.settings.presign_seconds)
    assert httpx.get(location).content == published_job["archive"]


def test_the_store_away_answers_503_and_records_nothing(api: TestClient, tmp_path: Path,
                                                        gate: Gate) -> None:
    gate.shut()
    source = write_rows(tmp_path / "train.csv", sentiment_rows(40))
    assert_error(upload_file(api, source), 503, "storage_unavailable")
    assert api.get("/v1/datasets").json()["data"] == []
    assert list((api.app.state.storage.root / "tmp").iterdir()) == []
    gate.open()
    assert upload_file(api, source).status_code == 201


def test_a_delete_while_the_store_is_away_still_deletes_the_dataset(
        api: TestClient, tmp_path: Path, gate: Gate) -> None:
    dataset = sentiment_dataset(api, tmp_path)
    gate.shut()
    assert api.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
    gate.open()
    assert_error(api.get(f"/v1/datasets/{dataset['id']}"), 404, "not_found")
