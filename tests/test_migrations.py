"""The migrations are the only source of the schema: they must match the ORM exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from app import migrate
from app.db import make_engine
from app.models import DEFAULT_PROJECT_ID, Base
from tests.conftest import postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite'}"
    else:
        with postgres_database() as url:
            yield url


def test_upgrade_matches_the_models_and_downgrade_empties(empty_database: str) -> None:
    engine = make_engine(empty_database)
    assert migrate.pending_revision(engine, empty_database) is not None
    migrate.upgrade(empty_database)
    assert migrate.pending_revision(engine, empty_database) is None
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    migrate.downgrade(empty_database)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()


BEFORE_PROJECTS = "05058a048bf4"


def test_upgrade_keeps_the_rows_of_a_used_database(empty_database: str) -> None:
    """Tables rebuilt by a migration keep their rows, and the rows that point at them."""
    migrate.upgrade(empty_database, BEFORE_PROJECTS)
    engine = make_engine(empty_database)
    now = "2026-11-01 12:00:00+00:00"
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO dataset (id, name, format, size_bytes, sha256, num_rows, columns, "
            "created_at) VALUES ('ds_1', 'd', 'csv', 1, 'x', 1, '[]', :now)"), {"now": now})
        connection.execute(text(
            "INSERT INTO job (id, status, spec, step, metrics, attempt, runtime_seconds, "
            "created_at, updated_at) VALUES ('job_1', 'succeeded', '{}', 0, '{}', 1, 0, :now, "
            ":now)"), {"now": now})
        connection.execute(text("INSERT INTO job_dataset (job_id, role, dataset_id) "
                                "VALUES ('job_1', 'train', 'ds_1')"))
        connection.execute(text("INSERT INTO job_event (job_id, kind, message, data, created_at)"
                                " VALUES ('job_1', 'queued', 'Job queued', '{}', :now)"),
                           {"now": now})
        connection.execute(text(
            "INSERT INTO idempotency_key (scope, key, request_sha256, object_id, created_at) "
            "VALUES ('jobs', 'k', 'x', 'job_1', :now)"), {"now": now})
    migrate.upgrade(empty_database)
    with engine.connect() as connection:
        for table in ("dataset", "job", "idempotency_key"):
            assert connection.execute(text(f"SELECT project_id FROM {table}")).scalars().all() \
                == [DEFAULT_PROJECT_ID], table
        for table in ("job_dataset", "job_event"):
            assert connection.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 1, table
    engine.dispose()
