"""The production service that the end-to-end modules without settings of their own share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.service import REDIS_DB, Service, production_service

# Its own Redis database: the modules that configure, kill or restart their own service run
# theirs on REDIS_DB while this one waits, idle, for its next module.
SHARED_REDIS_DB = REDIS_DB + 1


@pytest.fixture(scope="package")
def service(tmp_path_factory: pytest.TempPathFactory, model_catalog: Path) -> Iterator[Service]:
    """PostgreSQL, Redis, the API and a worker on the default settings, started once for the
    folder: its tests leave no job running, and each keeps to the jobs it submitted. A module
    that needs a service of its own defines its own `service` fixture."""
    with production_service(tmp_path_factory.mktemp("production"), model_catalog,
                            redis_db=SHARED_REDIS_DB) as running:
        yield running
