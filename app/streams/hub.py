"""StreamHub: one poller per API process feeds every open stream of that process.

A stream waiting for news costs a small queue and an asyncio task (no thread, no database
connection), so one process holds thousands. The poller is an asyncio task, started by the
first stream and stopped once none has been open for a while: every POLL_SECONDS it reads, in
a thread of its own on a connection of its own, the rows written since its previous read, for
all jobs at once (reads.read_batch), and hands each stream the rows of its job or project.
A stream whose queue would pass QUEUE_LIMIT items (a client reading slower than its job
writes) has its queue dropped and reads again from the database, from its own position.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from contextlib import suppress

import anyio
from anyio import to_thread
from sqlalchemy import Engine

from app.db import make_engine
from app.streams.items import JOB, Item, Position, project_key
from app.streams.reads import Batch, SafeHorizon, read_batch

logger = logging.getLogger("finetune.streams")

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0
QUEUE_LIMIT = 1000
IDLE_SECONDS = 30.0


class Subscription:
    """One open stream's inbox: what the poller found for it, and whether it must read from
    the database instead (when it starts, and when its queue overflowed)."""

    def __init__(self, key: str, limit: int) -> None:
        self.key = key
        self.wake = asyncio.Event()
        self.resync = True
        self._limit = limit
        self._items: deque[Item] = deque()

    def push(self, items: list[Item]) -> None:
        if len(self._items) + len(items) > self._limit:
            self._items.clear()
            self.resync = True
        else:
            self._items.extend(items)
        self.wake.set()

    def take(self) -> list[Item]:
        self.wake.clear()
        items = list(self._items)
        self._items.clear()
        return items

    def start_resync(self) -> None:
        """The stream reads from the database now: what is queued is part of that read."""
        self._items.clear()
        self.resync = False

    @property
    def drained(self) -> bool:
        return not self._items and not self.resync


class StreamHub:
    def __init__(self, database_url: str, *, poll_seconds: float = POLL_SECONDS,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS, queue_limit: int = QUEUE_LIMIT,
                 idle_seconds: float = IDLE_SECONDS) -> None:
        self.database_url = database_url
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.queue_limit = queue_limit
        self.idle_seconds = idle_seconds
        # Every row up to here has been handed to the streams (None: the poller is starting).
        self.horizon: Position | None = None
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._engine: Engine | None = None
        self._safe = SafeHorizon()

    @property
    def open_streams(self) -> int:
        return sum(len(group) for group in self._subscriptions.values())

    def subscribe(self, key: str) -> Subscription:
        subscription = Subscription(key, self.queue_limit)
        self._subscriptions.setdefault(key, set()).add(subscription)
        if self._task is None or self._task.done():
            self.horizon, self._safe = None, SafeHorizon()
            self._task = asyncio.get_running_loop().create_task(self._poll(),
                                                                name="stream poller")
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        group = self._subscriptions.get(subscription.key)
        if group is not None:
            group.discard(subscription)
            if not group:
                del self._subscriptions[subscription.key]

    async def close(self) -> None:
        """Stop the poller (the API's shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        self._dispose()

    async def _poll(self) -> None:
        # Its own thread and connection: never one of the routes', so it neither waits for
        # them nor makes them wait.
        limiter = anyio.CapacityLimiter(1)
        idle_since: float | None = None
        failing = False
        while True:
            if self._subscriptions:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= self.idle_seconds:
                self._dispose()
                return
            try:
                batch = await to_thread.run_sync(self._read, limiter=limiter)
                failing = False
            except Exception:  # a database outage: the streams wait, with their heartbeats
                if not failing:
                    logger.warning("stream poller: reading the database failed; retrying",
                                   exc_info=True)
                failing, batch = True, None
            if batch is not None:
                self._hand_out(batch)
            if batch is None or not batch.more:
                await asyncio.sleep(self.poll_seconds)

    def _read(self) -> Batch | None:
        if self._engine is None:
            self._engine = make_engine(self.database_url, 1)
        with self._engine.connect() as connection:
            return read_batch(connection, self._safe, self.horizon)

    def _hand_out(self, batch: Batch) -> None:
        starting = self.horizon is None
        self.horizon = batch.reached
        by_key: dict[str, list[Item]] = {}
        for item in batch.items:
            by_key.setdefault(item.key, []).append(item)
            if item.name == JOB:
                by_key.setdefault(project_key(None), []).append(item)
        for key, items in by_key.items():
            for subscription in self._subscriptions.get(key, ()):
                subscription.push(items)
        if starting:  # the streams that waited for a position may read up to it now
            for group in self._subscriptions.values():
                for subscription in group:
                    subscription.wake.set()

    def _dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
