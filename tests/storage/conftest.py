"""The API and the store on a real S3-compatible server: each test its own prefix."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.config import Settings
from tests.conftest import S3Server
from tests.storage.gate import Gate


@pytest.fixture
def gate(s3_server: S3Server) -> Iterator[Gate]:
    gate = Gate(s3_server.endpoint)
    yield gate
    gate.close()


@pytest.fixture
def settings(settings: Settings, s3_server: S3Server, gate: Gate) -> Settings:
    """The usual test settings with the store in the bucket, reached through the gate."""
    return settings.model_copy(update={"storage_url": s3_server.url(),
                                       "s3_endpoint_url": gate.endpoint,
                                       "s3_region": "us-east-1"})
