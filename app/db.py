"""Engine and session factory, built by whoever owns the process (the API's lifespan, the worker)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker

AFTER_COMMIT = "after_commit_actions"
# Servers and firewalls may close a connection idle for long; a fresh one costs little.
_READ_CONNECTION_SECONDS = 600


def make_engine(url: str, connections: int | None = None) -> Engine:
    """With `connections`, a pool of exactly that many: a process that runs no more threads
    than that (the API) knows that none of them ever waits for a connection."""
    pool = {} if connections is None else {"pool_size": connections, "max_overflow": 0}
    if url.startswith("sqlite"):
        # The API, the worker and the trainer child write concurrently: WAL lets readers
        # go on while one writes, and the busy timeout makes writers wait instead of failing.
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               **pool)
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own implicit transactions break SAVEPOINT, so SQLAlchemy emits BEGIN; and
        # IMMEDIATE, because a deferred transaction that reads and then writes fails at once
        # with "database is locked" when another process wrote in between.
        event.listen(engine, "begin",
                     lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


def make_read_engine(url: str, connections: int) -> AsyncEngine | None:
    """The same database through psycopg's asyncio interface, for the API's read-only routes,
    which run on the event loop; None where there is no such driver (SQLite: in-process file
    I/O with no network round trip to await; an explicitly chosen other driver).

    A polled read is a few short queries, so each round trip counts. Autocommit: at READ
    COMMITTED every statement sees its own snapshot even inside a transaction, so BEGIN and
    COMMIT would add two round trips and nothing else. No liveness ping at checkout: a
    connection broken while idle (a database restart) fails one request with
    `database_unavailable` (503, retry), and SQLAlchemy then replaces the whole pool.
    """
    if not url.startswith("postgresql+psycopg://"):
        return None
    return create_async_engine(url, pool_size=connections, max_overflow=0,
                               pool_recycle=_READ_CONNECTION_SECONDS,
                               isolation_level="AUTOCOMMIT")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def make_read_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def after_commit(session: Session, action: Callable[[], None]) -> None:
    """Run `action` once the session's transaction has committed (e.g. send a task)."""
    session.info.setdefault(AFTER_COMMIT, []).append(action)


def commit(session: Session) -> None:
    """Commit, then run the actions that wait for the commit; they are dropped on rollback."""
    session.commit()
    actions = session.info.pop(AFTER_COMMIT, [])
    for action in actions:
        action()


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work outside a request: commit on success, roll back on error."""
    session = factory()
    try:
        yield session
        commit(session)
    except BaseException:
        session.rollback()
        session.info.pop(AFTER_COMMIT, None)
        raise
    finally:
        session.close()
