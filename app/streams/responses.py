"""The streamed answers: a job's events and metric points until it ends, and a project's job
changes for as long as the client listens.

A stream first reads from the database what its client has not seen (from its cursor up to
the hub's position), then takes what the hub hands it. Between messages it sleeps on its
queue; a comment every `heartbeat_seconds` keeps proxies from cutting it. A job's stream,
once it has sent the job's final event, reads whatever of the job is left and ends with an
`end` message; a job that had already ended when the stream opened gets the same ending at
once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import anyio
from anyio import to_thread
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import State
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.auth import Caller
from app.jobs import lifecycle
from app.models import JobStatus
from app.streams import reads
from app.streams.hub import StreamHub, Subscription
from app.streams.items import (
    END,
    EVENT,
    EndOfStream,
    Item,
    Position,
    heartbeat,
    job_key,
    message,
    parse_event_cursor,
    parse_job_cursor,
    project_key,
)

# How long a client waits before it reconnects (the SSE `retry:` field).
RETRY_MILLISECONDS = 2000


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"

    def __init__(self, content: AsyncGenerator[bytes, None]) -> None:
        # no-cache, and no buffering by nginx: each message must reach the client at once.
        super().__init__(content, headers={"Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        self._content = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # A client that left stops the response between two messages: close the stream
            # now, so that it leaves the hub now, not whenever it is collected.
            await self._content.aclose()


def hub_for(state: State) -> StreamHub:
    """The process's hub, made by the first stream (a test may install its own first)."""
    hub: StreamHub | None = getattr(state, "stream_hub", None)
    if hub is None:
        hub = state.stream_hub = StreamHub(state.settings.database_url)
    return hub


async def close_hub(state: State) -> None:
    """Stop the process's stream poller, if a stream ever started it (the API's shutdown)."""
    hub: StreamHub | None = getattr(state, "stream_hub", None)
    if hub is not None:
        await hub.close()


async def job_stream(state: State, caller: Caller, job_id: str, after: int | None,
                     last_event_id: str | None) -> EventStreamResponse:
    """The caller's job's events and metric points after the cursor (404 when it is not
    the caller's: checked before the stream starts)."""
    cursor = parse_job_cursor(last_event_id) if last_event_id else Position(after or 0)
    status = await to_thread.run_sync(reads.job_status, state.session_factory, caller, job_id)
    stream = _Stream(hub_for(state), state.session_factory, _JobFeed(job_id), cursor)
    return EventStreamResponse(stream.messages(
        ended=status if status in lifecycle.TERMINAL else None))


async def change_stream(state: State, caller: Caller, status: JobStatus | None,
                        last_event_id: str | None) -> EventStreamResponse:
    """The status changes of the caller's jobs (an admin's: every project's), from now or
    from the cursor; `status` keeps only the moves to it."""
    cursor = parse_event_cursor(last_event_id) if last_event_id else None
    stream = _Stream(hub_for(state), state.session_factory, _ChangeFeed(caller, status), cursor)
    return EventStreamResponse(stream.messages(ended=None))


class _Feed(Protocol):
    job_id: str | None  # the job whose stream ends with it; None: a project's, which never ends

    @property
    def key(self) -> str: ...

    def read(self, session_factory: sessionmaker[Session], after: Position,
             until: Position | None) -> tuple[list[Item], bool]: ...

    def accepts(self, item: Item) -> bool: ...

    def cursor_text(self, position: Position) -> str: ...


@dataclass(frozen=True)
class _JobFeed:
    job_id: str

    @property
    def key(self) -> str:
        return job_key(self.job_id)

    def read(self, session_factory: sessionmaker[Session], after: Position,
             until: Position | None) -> tuple[list[Item], bool]:
        return reads.job_rows(session_factory, self.job_id, after, until)

    def accepts(self, item: Item) -> bool:
        return True

    def cursor_text(self, position: Position) -> str:
        return f"{position.events}.{position.points}"


@dataclass(frozen=True)
class _ChangeFeed:
    caller: Caller
    status: JobStatus | None
    job_id: None = None

    @property
    def key(self) -> str:
        return project_key(None if self.caller.admin else self.caller.project_id)

    def read(self, session_factory: sessionmaker[Session], after: Position,
             until: Position | None) -> tuple[list[Item], bool]:
        # The type checker's narrowing: a project's stream has no end to read to.
        assert until is not None, "a project's stream never reads to the end"  # nosec B101
        return reads.change_rows(session_factory, self.caller, after, until)

    def accepts(self, item: Item) -> bool:
        return self.status is None or item.status == self.status

    def cursor_text(self, position: Position) -> str:
        return str(position.events)


class _Stream:
    def __init__(self, hub: StreamHub, session_factory: sessionmaker[Session], feed: _Feed,
                 cursor: Position | None) -> None:
        self.hub = hub
        self.session_factory = session_factory
        self.feed = feed
        # None: a project's stream that starts from now, which the hub's position says.
        self.cursor = cursor
        self.sent_cursor = feed.cursor_text(cursor) if cursor is not None else None
        self.ended: JobStatus | None = None

    async def messages(self, ended: JobStatus | None) -> AsyncGenerator[bytes, None]:
        yield b"retry: %d\n\n" % RETRY_MILLISECONDS
        self.ended = ended
        if self.ended is None:
            subscription = self.hub.subscribe(self.feed.key)
            try:
                async for chunk in self._follow(subscription):
                    yield chunk
            finally:
                self.hub.unsubscribe(subscription)
        async for chunk in self._read_until(None):
            yield chunk
        # The type checker's narrowing: only a job's stream ends, with its cursor set.
        assert self.feed.job_id and self.cursor and self.ended  # nosec B101
        yield message(END, self.feed.cursor_text(self.cursor),
                      EndOfStream(job_id=self.feed.job_id,
                                  status=self.ended).model_dump_json().encode())

    async def _follow(self, subscription: Subscription) -> AsyncIterator[bytes]:
        """Everything for this stream until its job's final event (a project's: forever)."""
        quiet_since = time.monotonic()
        while self.ended is None:
            if subscription.resync and self.hub.horizon is not None:
                until = self.hub.horizon
                subscription.start_resync()
                if self.cursor is None:
                    self.cursor = until
                async for chunk in self._read_until(until):
                    quiet_since = time.monotonic()
                    yield chunk
            chunk = self._render(subscription.take())
            if chunk:
                quiet_since = time.monotonic()
                yield chunk
                continue
            wait = self.hub.heartbeat_seconds - (time.monotonic() - quiet_since)
            if wait > 0 and self.ended is None:
                with anyio.move_on_after(wait):
                    await subscription.wake.wait()
            elif self.ended is None:
                quiet_since = time.monotonic()
                yield heartbeat(self._idle_cursor(subscription))

    async def _read_until(self, until: Position | None) -> AsyncIterator[bytes]:
        """The stream's rows from the database, page by page, up to `until` (None: all)."""
        more = self.cursor is not None
        while more:
            # The type checker's narrowing: `more` starts true only with a cursor.
            assert self.cursor is not None  # nosec B101
            items, more = await to_thread.run_sync(self.feed.read, self.session_factory,
                                                   self.cursor, until)
            chunk = self._render(items)
            if chunk:
                yield chunk

    def _render(self, items: list[Item]) -> bytes:
        parts = []
        for item in items:
            if self.cursor is None or not self.cursor.precedes(item):
                continue  # read from the database and handed out by the hub too
            self.cursor = self.cursor.past(item)
            if self.feed.accepts(item):
                self.sent_cursor = self.feed.cursor_text(self.cursor)
                parts.append(message(item.name, self.sent_cursor, item.data))
            if self.feed.job_id and item.name == EVENT and item.status in lifecycle.TERMINAL:
                self.ended = item.status
        return b"".join(parts)

    def _idle_cursor(self, subscription: Subscription) -> str | None:
        """The hub's position, when this stream has everything up to it and the client has
        not been told yet."""
        if self.cursor is None or self.hub.horizon is None or not subscription.drained:
            return None
        self.cursor = self.cursor.joined(self.hub.horizon)
        text = self.feed.cursor_text(self.cursor)
        if text == self.sent_cursor:
            return None
        self.sent_cursor = text
        return text
