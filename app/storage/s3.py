"""The artifact store in a bucket of any S3-compatible store, shared by every machine.

Layout under `s3://bucket/prefix/`: `datasets/<id>/data.<fmt>`, `jobs/<id>/checkpoints/
step-N/...`, `jobs/<id>/model/...` and `jobs/<id>/model.tar.gz`. Every object carries its
sha256 as metadata. Each machine keeps its work folders, logs and temporary files in its
local folder (LocalStorage's layout) and fetches datasets through a cache keyed by sha256.

Files go up as multipart uploads of bounded parts (memory stays flat); a failed upload is
aborted by boto3's transfer manager, and what is not complete is never recorded: a dataset
row, a checkpoint row or a succeeded job comes only after its last object is in the store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import boto3
from boto3.s3.transfer import S3UploadFailedError, TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from app.hashing import sha256_of
from app.storage.cache import FileCache
from app.storage.local import (
    CHUNK_BYTES,
    LocalStorage,
    StorageFull,
    StorageUnavailable,
    StoredFile,
    disk_space,
    is_disk_full,
)

logger = logging.getLogger("finetune.storage")

_PART_BYTES = 16 * 1024 * 1024
_TRANSFER = TransferConfig(multipart_threshold=_PART_BYTES, multipart_chunksize=_PART_BYTES,
                           max_concurrency=4)
# A worker waits out a short outage of the store before it gives up on a checkpoint or a
# model; a request does not (boto3's own retries, then 503).
PATIENCE_SECONDS = 30.0
_MISSING = {"404", "NoSuchKey", "NotFound"}
T = TypeVar("T")


class S3Storage(LocalStorage):
    def __init__(self, root: Path, url: str, *, endpoint_url: str | None = None,
                 region: str | None = None, cache_max_bytes: int = 20 * 1024**3,
                 presign_seconds: int = 300) -> None:
        super().__init__(root)
        parts = urlsplit(url)
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/") + "/" if parts.path.strip("/") else ""
        self.presign_seconds = presign_seconds
        self.client = boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5,
                          read_timeout=60, signature_version="s3v4"))
        self.cache = FileCache(self.root / "cache", cache_max_bytes)

    def prepare(self) -> str:
        """Create the bucket where it is missing: a store of one's own (compose's) starts
        empty, while a bucket made by an operator is only checked."""
        where = f"s3://{self.bucket}/{self.prefix}"
        try:
            self._call(f"looking up the bucket {self.bucket}",
                       lambda: self.client.head_bucket(Bucket=self.bucket))
            return f"artifact store: {where}"
        except _ObjectMissing:
            region = self.client.meta.region_name
            location = ({} if region in (None, "us-east-1")
                        else {"CreateBucketConfiguration": {"LocationConstraint": region}})
            self._call(f"creating the bucket {self.bucket}",
                       lambda: self.client.create_bucket(Bucket=self.bucket, **location))
            return f"artifact store: {where} (bucket created)"

    def key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    # -- datasets ----------------------------------------------------------------------------

    def publish_dataset(self, temp: Path, dataset_id: str, fmt: str) -> None:
        """Upload the checked file; this machine keeps it in its cache."""
        digest = sha256_of(temp)
        self._upload(temp, self.key("datasets", dataset_id, f"data.{fmt}"), digest)
        self.cache.adopt(digest, temp)

    def dataset_file(self, dataset_id: str, fmt: str) -> Path:
        key = self.key("datasets", dataset_id, f"data.{fmt}")
        digest = self._head(key, required=True)["Metadata"].get("sha256", "")
        if len(digest) != 64:
            raise StorageUnavailable(f"{key} in the object store has no sha256 metadata: it "
                                     "was not written by this service")
        cached = self.cache.get(digest)
        if cached is not None:
            return cached
        return self._call(f"fetching {key}", lambda: self.cache.fill(
            digest, lambda path: self.client.download_file(self.bucket, key, str(path),
                                                           Config=_TRANSFER)))

    def delete_dataset(self, dataset_id: str) -> None:
        self._delete_under(self.key("datasets", dataset_id) + "/")

    # -- checkpoints and models (the worker) ---------------------------------------------

    def keep_checkpoint(self, job_id: str, step: int, manifest: dict[str, str]) -> None:
        folder = self.checkpoints_dir(job_id) / f"step-{step}"
        for relative, digest in manifest.items():
            key = self.key("jobs", job_id, "checkpoints", f"step-{step}", relative)
            self._patiently(lambda key=key, relative=relative, digest=digest:
                            self._upload(folder / relative, key, digest))

    def restore_checkpoint(self, job_id: str, step: int, manifest: dict[str, str]) -> None:
        folder = self.checkpoints_dir(job_id) / f"step-{step}"
        for relative, digest in manifest.items():
            target = folder / relative
            if target.is_file() and sha256_of(target) == digest:
                continue
            key = self.key("jobs", job_id, "checkpoints", f"step-{step}", relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            # boto3 writes to a name of its own and renames: the ranks of one job may fetch
            # at once, and a reader never sees part of a file.
            try:
                self._patiently(lambda key=key, target=target: self._call(
                    f"fetching {key}", lambda: self.client.download_file(
                        self.bucket, key, str(target), Config=_TRANSFER)))
            except _ObjectMissing:  # the resume check then names the file and skips the step
                return

    def drop_checkpoint(self, job_id: str, step: int) -> None:
        super().drop_checkpoint(job_id, step)
        self._delete_under(self.key("jobs", job_id, "checkpoints", f"step-{step}") + "/")

    def keep_model(self, job_id: str, files: dict[str, str]) -> None:
        """Every file of the model folder, then the archive: the archive last, as the API
        serves the model once the job is recorded as succeeded, after this returns."""
        model_dir = self.job_model_dir(job_id)
        archive = self.model_archive_path(job_id)
        uploads = [(model_dir / relative, self.key("jobs", job_id, "model", relative), digest)
                   for relative, digest in files.items()]
        uploads.append((archive, self.key("jobs", job_id, "model.tar.gz"), sha256_of(archive)))
        for path, key, digest in uploads:
            self._patiently(lambda path=path, key=key, digest=digest:
                            self._upload(path, key, digest))

    # -- downloads ---------------------------------------------------------------------------

    def artifact(self, job_id: str, relative: str) -> StoredFile | None:
        return self._stored(self.key("jobs", job_id, "model", relative))

    def model_archive(self, job_id: str) -> StoredFile | None:
        return self._stored(self.key("jobs", job_id, "model.tar.gz"))

    def dataset_download(self, dataset_id: str, fmt: str) -> StoredFile | None:
        return self._stored(self.key("datasets", dataset_id, f"data.{fmt}"))

    def read(self, file: StoredFile, start: int, end: int) -> Iterator[bytes]:
        # This store only makes files with a key.
        assert file.key is not None  # nosec B101
        body = self._call(f"reading {file.key}", lambda: self.client.get_object(
            Bucket=self.bucket, Key=file.key, Range=f"bytes={start}-{end}")["Body"])
        return body.iter_chunks(CHUNK_BYTES)

    def presigned_url(self, file: StoredFile, filename: str) -> str | None:
        disposition = f"attachment; filename*=utf-8''{quote(filename)}"
        return self._call("signing a URL", lambda: self.client.generate_presigned_url(
            "get_object", ExpiresIn=self.presign_seconds,
            Params={"Bucket": self.bucket, "Key": file.key,
                    "ResponseContentDisposition": disposition}))

    # -- the calls ---------------------------------------------------------------------------

    def _stored(self, key: str) -> StoredFile | None:
        head = self._head(key, required=False)
        return None if head is None else StoredFile(head["ContentLength"], key=key)

    def _head(self, key: str, *, required: bool) -> Any:
        try:
            return self._call(f"looking up {key}",
                              lambda: self.client.head_object(Bucket=self.bucket, Key=key))
        except _ObjectMissing:
            if required:
                raise StorageUnavailable(f"the object store has no {key} (s3://{self.bucket}); "
                                         "it was deleted outside the service") from None
            return None

    def _upload(self, path: Path, key: str, digest: str) -> None:
        self._call(f"uploading {key}", lambda: self.client.upload_file(
            str(path), self.bucket, key, ExtraArgs={"Metadata": {"sha256": digest}},
            Config=_TRANSFER))

    def _delete_under(self, prefix: str) -> None:
        def delete() -> None:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
        self._call(f"deleting {prefix}", delete)

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """Run one call to the store; its failures become StorageUnavailable."""
        try:
            return call()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise _ObjectMissing(what) from None
            raise StorageUnavailable(f"the object store refused {what}: {code or exc} "
                                     f"(bucket {self.bucket})") from None
        except (BotoCoreError, S3UploadFailedError, OSError) as exc:
            # A download into this machine's full disk is not the store's absence.
            if is_disk_full(exc, self.root):
                raise StorageFull(f"this machine's disk (FT_STORAGE_DIR) is full: "
                                  f"{disk_space(self.root)} while {what}") from None
            raise StorageUnavailable(f"the object store could not be reached while {what}: "
                                     f"{exc}; try again once it is back") from None

    def _patiently(self, call: Callable[[], None]) -> None:
        """Retry a call while the store is unreachable, up to PATIENCE_SECONDS."""
        deadline = time.monotonic() + PATIENCE_SECONDS
        while True:
            try:
                call()
                return
            except StorageUnavailable as exc:
                if isinstance(exc, _ObjectMissing) or time.monotonic() > deadline:
                    raise
                logger.warning("%s; retrying", exc.message)
                time.sleep(2)


class _ObjectMissing(StorageUnavailable):
    """No such object: a lookup answers None, a required one says what is missing."""
