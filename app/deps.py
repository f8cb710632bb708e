"""Request dependencies as Annotated aliases: one session that commits, the settings, the store.

How a request uses the database, so that the API keeps answering under load: a database
connection is held only by a thread that is running. FastAPI validates a sync route's answer
in the thread pool while the route's dependencies are still open, so a session that commits
only when its dependency exits holds its connection while it waits for a thread; once every
thread waits for a connection, nothing moves until the pool times out. A sync route's session
therefore commits at the end of the route, in the route's own thread (`SessionRoute`), and the
process runs no more threads than it has connections (`size_thread_pool`).

Each trip through the thread pool is a hand-over of the GIL between threads, a large share of
a short request's cost, so a request makes at most one: authentication is async, and
`SessionRoute` runs a sync route (and its commit) in one thread as an async endpoint, whose
answer FastAPI then validates on the event loop instead of in a second trip. A route that only
reads the database (the polled reads) makes none: with `ReadSessionDep` on PostgreSQL, its
sync code runs on the event loop in a greenlet, each query awaited through psycopg's asyncio
driver (SQLAlchemy's `run_sync` mechanism), so a hundred pollers cost no thread.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import anyio
from anyio import to_thread
from fastapi import Depends, Request
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.util import greenlet_spawn

from app.config import Settings
from app.db import AFTER_COMMIT, commit
from app.storage import LocalStorage

# Set on a read session on PostgreSQL: the turns its route takes to run on the event loop.
_EVENT_LOOP_TURNS = "event_loop_turns"


async def get_session(request: Request) -> AsyncIterator[Session]:
    """Commit when the route succeeds, roll back otherwise.

    A sync route has ended its transaction already, in its own thread (`SessionRoute`); an
    async route's session ends here. Either way it happens before the response is sent
    (scope="function"), so a failed commit or a failed after-commit action (sending the job
    to the broker) becomes the response.
    """
    session: Session = request.app.state.session_factory()
    try:
        yield session
        if session.in_transaction():
            await _outside_the_pool(commit, session)
    except BaseException:
        if session.in_transaction():
            await _outside_the_pool(session.rollback)
        session.info.pop(AFTER_COMMIT, None)
        raise
    finally:
        session.close()  # holds no connection any more: no I/O


async def get_read_session(request: Request) -> AsyncIterator[Session]:
    """The session of a sync `SessionRoute` route that only reads the database and does no
    other I/O: on PostgreSQL, the sync face of an asyncio session (`make_read_engine`), which
    `SessionRoute` drives on the event loop; elsewhere a plain session, run in a thread.
    Either way the route has ended its transaction before this closes it."""
    factory = request.app.state.read_session_factory
    if factory is None:
        session: Session = request.app.state.session_factory()
        try:
            yield session
        finally:
            session.close()
        return
    async_session: AsyncSession = factory()
    async_session.sync_session.info[_EVENT_LOOP_TURNS] = request.app.state.read_limiter
    try:
        yield async_session.sync_session
    finally:
        await async_session.close()


async def _outside_the_pool(work: Callable[..., Any], *arguments: Any) -> None:
    # The session may hold a connection here: waiting for one of the routes' threads could
    # wait for a thread that waits for this connection. A fresh limiter is no shared limit;
    # this runs once per async route, after its work.
    with anyio.CancelScope(shield=True):
        await to_thread.run_sync(work, *arguments, limiter=anyio.CapacityLimiter(1))


class SessionRoute(APIRoute):
    """A route whose sync endpoint runs, and ends the request's transaction, in one thread
    (with a `ReadSessionDep` on PostgreSQL: on the event loop)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = _ending_its_transaction(endpoint)
        super().__init__(path, endpoint, **kwargs)


def _ending_its_transaction(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    def run(arguments: dict[str, Any], sessions: list[Session]) -> Any:
        try:
            answer = endpoint(**arguments)
            for session in sessions:
                commit(session)
        except BaseException:
            for session in sessions:
                session.rollback()
            raise
        return answer

    # functools.wraps keeps the endpoint's signature, from which FastAPI reads its parameters.
    @functools.wraps(endpoint)
    async def in_one_go(**arguments: Any) -> Any:
        sessions = [value for value in arguments.values() if isinstance(value, Session)]
        for session in sessions:
            if (turns := session.info.get(_EVENT_LOOP_TURNS)) is not None:
                # First come, first served: the pool's own wait for a connection is not
                # fair, and under load its unlucky waiters would wait for seconds.
                async with turns:
                    return await greenlet_spawn(run, arguments, sessions)
        return await to_thread.run_sync(run, arguments, sessions)

    return in_one_go


def size_thread_pool(threads: int) -> None:
    """Run at most `threads` sync routes and dependencies at once: the connection pool's size."""
    to_thread.current_default_thread_limiter().total_tokens = threads


async def request_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_storage(request: Request) -> LocalStorage:
    return request.app.state.storage


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[Session, Depends(get_read_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(request_settings)]
StorageDep = Annotated[LocalStorage, Depends(get_storage)]
