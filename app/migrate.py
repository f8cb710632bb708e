"""Schema migrations: Alembic is the only way the schema is made."""

from __future__ import annotations

import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

import migrations

MIGRATIONS_DIR = Path(migrations.__file__).parent


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    # On the embedded default the API and the worker may both migrate one new SQLite file at
    # the same moment; the loser finds it locked or already made, and tries again.
    for attempt in range(10):
        try:
            command.upgrade(alembic_config(database_url), revision)
            return
        except OperationalError:
            if not database_url.startswith("sqlite") or attempt == 9:
                raise
            time.sleep(0.5)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def pending_revision(engine: Engine, database_url: str) -> str | None:
    """The head revision when the database is behind it, else None."""
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return head if current != head else None


def migrate_or_refuse(engine: Engine, database_url: str, migrate_on_start: bool) -> None:
    """For a process that serves from the database: migrate it where the settings say so
    (the embedded default), else exit unless `finetune migrate` has brought it to head."""
    if migrate_on_start:
        upgrade(database_url)
    elif (head := pending_revision(engine, database_url)) is not None:
        raise SystemExit(f"the database is not migrated to the current schema ({head}); "
                         "run `finetune migrate` first")
