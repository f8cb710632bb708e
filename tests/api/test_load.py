"""Many clients at once, over real HTTP, on PostgreSQL: every one gets its answer.

Not a timing test (bench/api_load.py measures, /healthz included): with fewer database
connections than concurrent requests, it fails if a request can hold a connection while it
waits for a thread (the pool then times out and requests fail).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from app import migrate
from app.config import Settings
from app.main import create_app
from tests.api.helpers import submit_a_job
from tests.conftest import create_key, postgres_database
from tests.e2e.service import free_port

CLIENTS = 200

pytestmark = pytest.mark.postgres


@pytest.fixture
def served(tmp_path: Path, model_catalog: Path) -> Iterator[tuple[str, str]]:
    """The API on PostgreSQL behind uvicorn, with 4 connections; its base URL and a key."""
    with postgres_database() as url:
        migrate.upgrade(url)
        settings = Settings(database_url=url,
                            broker_url=f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}",
                            storage_dir=tmp_path / "storage", models_dir=model_catalog,
                            api_db_connections=4, rate_limit_per_minute=10 * CLIENTS)
        app = create_app(settings)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="warning", backlog=4 * CLIENTS))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}", create_key(app, "team-a")
        finally:
            server.should_exit = True
            thread.join(timeout=30)


def test_every_concurrent_request_is_answered(served: tuple[str, str], tmp_path: Path) -> None:
    base, key = served
    headers = {"Authorization": f"Bearer {key}"}
    job_id = submit_a_job(base, headers, tmp_path)

    async def load() -> list[int]:
        limits = httpx.Limits(max_connections=CLIENTS + 1)
        async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits,
                                     timeout=120) as client:
            answers = await asyncio.gather(
                *(client.get(f"/v1/jobs/{job_id}") for _ in range(CLIENTS)),
                *(client.get("/v1/jobs", params={"limit": 5}) for _ in range(CLIENTS // 4)),
                *(client.get(path) for path in ("/healthz", "/readyz")))
        return [answer.status_code for answer in answers]

    statuses = asyncio.run(load())
    assert statuses == [200] * len(statuses)
