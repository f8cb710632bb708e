"""`finetune keys create|ls|revoke`: the operator's way to manage keys, straight on the
database (FT_DATABASE_URL), so that the first admin key can exist before any key does.

The database code is imported when a command runs, so that `finetune --help` stays quick.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from app.config import Settings, get_settings
from app.keys import PROJECT_NAME_PATTERN

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


LOCAL_PROJECT = "default"


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = commands.add_parser("keys", help="create, list and revoke API keys (on the database)")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a key; it is printed once")
    create.add_argument("--project", required=True, type=_project_name,
                        help="the key's project, made if new")
    create.add_argument("--admin", action="store_true",
                        help="the key may act on every project and manage keys")
    create.add_argument("--name", help="what the key is for")
    create.set_defaults(handler=_create)
    listing = actions.add_parser("ls", help="list keys: prefix, project, created, last used")
    listing.add_argument("--project", type=_project_name, help="only this project's keys")
    listing.set_defaults(handler=_list)
    revoke = actions.add_parser("revoke", help="revoke a key by its prefix")
    revoke.add_argument("prefix", metavar="PREFIX")
    revoke.set_defaults(handler=_revoke)


def _project_name(value: str) -> str:
    if not re.match(PROJECT_NAME_PATTERN, value):
        raise argparse.ArgumentTypeError(
            "a project name is 1-64 lower-case letters, digits, '.', '_' or '-'")
    return value


@contextmanager
def _database(settings: Settings, *, must_be_migrated: bool = True) -> Iterator[Session]:
    """One transaction on the service's database."""
    from app import migrate
    from app.db import make_engine, make_session_factory, transaction

    engine = make_engine(settings.database_url)
    try:
        if must_be_migrated and (head := migrate.pending_revision(
                engine, settings.database_url)) is not None:
            raise SystemExit(f"finetune keys: the database is not migrated ({head}); "
                             "run `finetune migrate` first")
        with transaction(make_session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()


def _create(args: argparse.Namespace) -> int:
    from app.keys import service

    settings = get_settings()
    with _database(settings) as session:
        key, secret = service.create_key(session, args.project, admin=args.admin,
                                         name=args.name)
        role = "admin key" if key.admin else "key"
    print(f"{role} {key.prefix} of project {args.project} (shown once; keep it secret):\n"
          f"{secret}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from app.keys import service

    settings = get_settings()
    with _database(settings) as session:
        rows = service.list_keys(session, args.project)
    print(f"{'PREFIX':<14}{'PROJECT':<20}{'ADMIN':<7}{'CREATED':<22}{'LAST USED':<22}"
          "REVOKED")
    for key, project in rows:
        print(f"{key.prefix:<14}{project:<20}{'yes' if key.admin else '':<7}"
              f"{_when(key.created_at):<22}{_when(key.last_used_at):<22}"
              f"{_when(key.revoked_at)}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from app.keys import service

    settings = get_settings()
    from app.errors import NotFound

    try:
        with _database(settings) as session:
            key, project = service.revoke(session, args.prefix)
    except NotFound as exc:
        print(f"finetune keys: {exc.message}")
        return 1
    print(f"revoked {key.prefix} of project {project}")
    return 0


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "-"


def ensure_local_key(settings: Settings) -> str | None:
    """The key of `finetune up`: made on first start in `settings.api_key_file` (mode 0600).

    Answers the new key, to be printed once, or None when the file holds a live key already.
    """
    from app.keys import service

    path = settings.api_key_file
    with _database(settings) as session:
        stored = service.authenticate(session, path.read_text().strip()) if path.is_file() \
            else None
        if stored is not None and stored.revoked_at is None:
            return None
        _, secret = service.create_key(session, LOCAL_PROJECT, name="finetune up")
        # Written before the commit: a key that could not be stored is never made.
        _write_private(path, secret)
    return secret


def _write_private(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    # Created 0600 from the start: there is no moment when others could read it.
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        stream.write(secret + "\n")
    os.replace(partial, path)
