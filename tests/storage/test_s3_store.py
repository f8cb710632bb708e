"""The S3 store's own moves between machines, on a real S3-compatible server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from app.artifacts.service import publish_model
from app.config import Settings
from app.error_codes import is_retryable
from app.hashing import sha256_of
from app.storage import StorageUnavailable, make_storage
from app.storage import s3 as s3_module
from app.storage.cache import FileCache
from app.storage.s3 import S3Storage
from tests.conftest import S3Server
from tests.factories import write_tiny_bert
from tests.storage.gate import Gate


def machine(name: str, tmp_path: Path, url: str, endpoint: str) -> S3Storage:
    """The store as one machine sees it: the shared bucket, a local folder of its own."""
    return S3Storage(tmp_path / name, url, endpoint_url=endpoint, region="us-east-1")


@pytest.fixture
def url(s3_server: S3Server) -> str:
    return s3_server.url()


def test_make_storage_picks_the_bucket_only_when_named(settings, s3_server: S3Server) -> None:
    assert type(make_storage(settings.model_copy(update={"storage_url": None}))).__name__ \
        == "LocalStorage"
    store = make_storage(settings)
    assert isinstance(store, S3Storage)
    assert store.bucket == s3_server.bucket and store.prefix.endswith("/")


def test_a_large_dataset_goes_up_in_parts_and_down_to_another_machine(
        tmp_path: Path, url: str, s3_server: S3Server) -> None:
    api, worker = (machine(name, tmp_path, url, s3_server.endpoint) for name in ("api", "w"))
    temp = api.temp_path()
    temp.write_bytes(os.urandom(40 * 1024 * 1024))
    digest = sha256_of(temp)
    api.publish_dataset(temp, "ds_big", "csv")
    head = api.client.head_object(Bucket=api.bucket, Key=api.key("datasets/ds_big/data.csv"))
    assert head["ETag"].endswith('-3"')  # three parts of 16 MiB at most: memory stays flat
    fetched = worker.dataset_file("ds_big", "csv")
    assert fetched == worker.root / "cache" / digest and sha256_of(fetched) == digest
    assert worker.dataset_file("ds_big", "csv") == fetched  # the second time from the cache


def test_the_cache_keeps_its_bound_least_recently_used_first_out(tmp_path: Path) -> None:
    cache = FileCache(tmp_path / "cache", max_bytes=25)
    paths = {}
    for index, name in enumerate(("a", "b", "c")):
        source = tmp_path / name
        source.write_bytes(name.encode() * 10)
        paths[name] = cache.adopt(sha256_of(source), source)
        os.utime(paths[name], (index, index))  # a, then b, then c: in this order of use
    assert not paths["a"].exists() and paths["b"].exists() and paths["c"].exists()
    assert cache.get(sha256_of(paths["b"])) == paths["b"]  # used now: c is the oldest
    source = tmp_path / "d"
    source.write_bytes(b"d" * 10)
    cache.adopt(sha256_of(source), source)
    assert paths["b"].exists() and not paths["c"].exists()


def test_a_fetched_copy_that_does_not_match_its_hash_is_refused(tmp_path: Path) -> None:
    cache = FileCache(tmp_path / "cache", max_bytes=100)
    with pytest.raises(OSError, match="does not match"):
        cache.fill("0" * 64, lambda path: path.write_bytes(b"not it"))
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_checkpoint_kept_on_one_machine_is_restored_on_another(
        tmp_path: Path, url: str, s3_server: S3Server) -> None:
    first, second = (machine(name, tmp_path, url, s3_server.endpoint) for name in ("1", "2"))
    folder = first.checkpoints_dir("job_a") / "step-4"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(os.urandom(1000))
    (folder / "sub" / "state.json").write_text("{}")
    manifest = {path.relative_to(folder).as_posix(): sha256_of(path)
                for path in folder.rglob("*") if path.is_file()}
    first.keep_checkpoint("job_a", 4, manifest)
    second.restore_checkpoint("job_a", 4, manifest)
    restored = second.checkpoints_dir("job_a") / "step-4"
    assert {p.relative_to(restored).as_posix(): sha256_of(p)
            for p in restored.rglob("*") if p.is_file()} == manifest
    first.drop_checkpoint("job_a", 4)
    assert not folder.exists()
    third = machine("3", tmp_path, url, s3_server.endpoint)
    third.restore_checkpoint("job_a", 4, manifest)  # gone from the store: nothing to fetch
    assert not (third.checkpoints_dir("job_a") / "step-4" / "model.safetensors").exists()


def test_a_model_is_never_half_published(tmp_path: Path, url: str, gate: Gate,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_module, "PATIENCE_SECONDS", 1.0)
    store = machine("w", tmp_path, url, gate.endpoint)
    trained = write_tiny_bert(store.job_work_dir("job_m") / "model")
    gate.shut()
    with pytest.raises(StorageUnavailable, match="could not be reached"):
        publish_model(store, "job_m", trained)
    gate.open()
    assert store.model_archive("job_m") is None  # the archive goes last: nothing is served
    manifest = publish_model(store, "job_m", trained)  # the retry: already moved in place
    archive = store.model_archive("job_m")
    assert archive is not None and archive.size == store.model_archive_path("job_m").stat().st_size
    assert {a.path for a in manifest} >= {"config.json", "model.safetensors"}


def test_a_checkpoint_the_store_did_not_take_is_neither_kept_nor_recorded(
        tmp_path: Path, url: str, gate: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.checkpoints import CheckpointKeeper, StoreUnreachable

    monkeypatch.setattr(s3_module, "PATIENCE_SECONDS", 1.0)
    store = machine("w", tmp_path, url, gate.endpoint)
    written = tmp_path / "trainer" / "checkpoint-10"
    written.mkdir(parents=True)
    (written / "model.safetensors").write_bytes(b"weights")
    # No database: a checkpoint the store lacks must fail before it is recorded.
    keeper = CheckpointKeeper(None, "job_c", store, None)  # type: ignore[arg-type]
    gate.shut()
    with pytest.raises(StoreUnreachable, match="step 10 could not be put") as caught:
        keeper._keep(SimpleNamespace(output_dir=str(tmp_path / "trainer")),  # type: ignore[arg-type]
                     SimpleNamespace(global_step=10))  # type: ignore[arg-type]
    assert caught.value.code == "storage_unavailable" and is_retryable(caught.value.code)
    assert not (store.checkpoints_dir("job_c") / "step-10").exists()


def test_migrate_creates_a_missing_bucket_and_checks_an_existing_one(
        s3_server: S3Server, tmp_path: Path) -> None:
    bucket = f"fresh-{os.urandom(4).hex()}"
    env = {**os.environ, "FT_DATABASE_URL": f"sqlite:///{tmp_path / 'ft.sqlite'}",
           "FT_STORAGE_DIR": str(tmp_path / "local"), "FT_STORAGE_URL": f"s3://{bucket}/ft",
           "FT_S3_ENDPOINT_URL": s3_server.endpoint, "FT_S3_REGION": "us-east-1"}

    def migrate() -> str:
        done = subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert f"s3://{bucket}/ft/ (bucket created)" in migrate()
    s3_server.client().head_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    again = migrate()
    assert f"s3://{bucket}/ft/" in again and "created" not in again


@pytest.mark.parametrize("url", ["http://bucket/prefix", "s3://", "s3:///prefix",
                                 "s3://bucket/prefix?versionId=1"])
def test_a_storage_url_that_names_no_bucket_is_refused_at_start(url: str) -> None:
    with pytest.raises(ValidationError, match="FT_STORAGE_URL must be s3://bucket"):
        Settings(storage_url=url)

