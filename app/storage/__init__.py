"""The artifact store: uploaded datasets, checkpoints and published models.

Two implementations of one interface: the local folder (the default, one machine) and a
bucket of an S3-compatible store (FT_STORAGE_URL), which is what lets the API and workers
run on separate machines.
"""

from __future__ import annotations

from app.config import Settings
from app.storage.local import LocalStorage, StorageUnavailable, StoredFile

__all__ = ["LocalStorage", "StorageUnavailable", "StoredFile", "make_storage"]


def make_storage(settings: Settings) -> LocalStorage:
    if settings.storage_url is None:
        return LocalStorage(settings.storage_dir)
    from app.storage.s3 import S3Storage  # boto3 only where a bucket is used

    return S3Storage(settings.storage_dir, settings.storage_url,
                     endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
                     cache_max_bytes=settings.cache_max_bytes,
                     presign_seconds=settings.presign_seconds)
