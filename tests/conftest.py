"""Shared fixtures: migrated databases (SQLite and PostgreSQL), a tiny model catalog, the API.

API tests run against databases built by the migrations, each test inside one transaction
that is rolled back at its end.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import NullPool

from app import migrate
from app.config import Settings
from app.db import transaction
from app.keys import service as keys
from app.main import create_app
from tests.factories import write_tiny_bart, write_tiny_bert, write_tiny_gpt2

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

POSTGRES_URL = os.environ.get("FT_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FT_TEST_REDIS_URL", "redis://127.0.0.1:6379")
TINY_MODEL = "tiny/bert"
TINY_GPT2 = "tiny/gpt2"
TINY_BART = "tiny/bart"


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards."""
    name = f"ft_test_{uuid.uuid4().hex[:12]}"
    # No pooled connection: a test may restart the server in between.
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# An S3-compatible server that .ci/run started (moto_server); without it the fixture starts
# its own.
S3_URL = os.environ.get("FT_TEST_S3_URL")


@dataclass(frozen=True)
class S3Server:
    """A real S3-compatible HTTP server (moto in server mode) with one bucket."""

    endpoint: str
    bucket: str

    def url(self) -> str:
        """A new prefix of the bucket: a store of its own for one test."""
        return f"s3://{self.bucket}/{uuid.uuid4().hex[:12]}"

    def client(self) -> object:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """The S3 server at FT_TEST_S3_URL, or `moto_server` on a free port; the standard AWS chain
    finds its test credentials in the environment, which the service processes of end-to-end
    tests inherit."""
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(name, value)
    if S3_URL:
        yield _with_bucket(S3Server(S3_URL.rstrip("/"), f"ft-test-{uuid.uuid4().hex[:8]}"), None)
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    process = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    yield _with_bucket(S3Server(f"http://127.0.0.1:{port}", "ft-test"), process)
    process.terminate()
    process.wait(timeout=10)
    log.close()


def _with_bucket(server: S3Server, process: subprocess.Popen[bytes] | None) -> S3Server:
    """`server` once it answers, with its bucket created."""
    deadline = time.monotonic() + 30
    while True:
        try:
            server.client().create_bucket(Bucket=server.bucket)  # type: ignore[attr-defined]
            return server
        except Exception:
            if (process is not None and process.poll() is not None) \
                    or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="session")
def model_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    catalog = tmp_path_factory.mktemp("models")
    write_tiny_bert(catalog / TINY_MODEL)
    write_tiny_gpt2(catalog / TINY_GPT2)
    write_tiny_bart(catalog / TINY_BART)
    return catalog


@pytest.fixture(scope="session",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'api.sqlite'}"
        migrate.upgrade(url)
        yield url
        return
    with postgres_database() as url:
        migrate.upgrade(url)
        yield url


@pytest.fixture
def settings(database_url: str, tmp_path: Path, model_catalog: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Settings:
    broker = tmp_path_factory.getbasetemp() / "broker.sqlite"
    return Settings(database_url=database_url, broker_url=f"sqla+sqlite:///{broker}",
                    storage_dir=tmp_path / "storage", models_dir=model_catalog,
                    max_upload_bytes=1024 * 1024, auto_migrate=False,
                    # No dry-run server runs unless a test starts one: answer 202 at once.
                    dry_run_wait_seconds=0)


def create_key(app: FastAPI, project: str, *, admin: bool = False) -> str:
    """A new API key of `project`, made the way `finetune keys create` makes it."""
    with transaction(app.state.session_factory) as session:
        return keys.create_key(session, project, admin=admin)[1]


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    """The app on a migrated database, as a client holding a key of project `team-a`.

    Everything a test writes is rolled back after it.
    """
    app = create_app(settings)
    with TestClient(app) as client:
        connection = app.state.engine.connect()
        outer = connection.begin()
        app.state.session_factory = sessionmaker(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
        # The read-only routes' own connections would not see the test's transaction: they
        # read through it too (the tests on a real server cover the read engine).
        app.state.read_session_factory = None
        client.headers["Authorization"] = f"Bearer {create_key(app, 'team-a')}"
        try:
            yield client
        finally:
            outer.rollback()
            connection.close()
