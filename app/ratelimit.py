"""Requests per minute per caller: in Redis when Redis is the broker, so that every API
process counts together; in the process otherwise (the embedded default runs one API).

Fixed one-minute windows: simple, one round trip, and at most twice the limit across a
window boundary, which is what a guard against runaway clients needs. The check runs on the
event loop (authentication is async), so the Redis client is asyncio's.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Protocol

import redis
import redis.asyncio

from app.config import Settings
from app.errors import TooManyRequests

logger = logging.getLogger("finetune.api")

WINDOW_SECONDS = 60
OUTAGE_PAUSE_SECONDS = 10


class RateLimiter(Protocol):
    async def check(self, identity: str) -> None: ...

    async def close(self) -> None: ...


def _refuse(limit: int, now: float) -> TooManyRequests:
    retry_after = max(1, math.ceil(WINDOW_SECONDS - now % WINDOW_SECONDS))
    return TooManyRequests(f"more than {limit} requests in a minute with this key; retry in "
                           f"{retry_after} s", headers={"Retry-After": str(retry_after)})


class LocalRateLimiter:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._counts: dict[str, tuple[int, int]] = {}

    async def check(self, identity: str) -> None:
        # No await in here: on the one event loop, the count cannot change under it.
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        seen_window, count = self._counts.get(identity, (window, 0))
        count = count + 1 if seen_window == window else 1
        if len(self._counts) > 100_000:  # callers of past windows only; keep memory bounded
            self._counts = {k: v for k, v in self._counts.items() if v[0] == window}
        self._counts[identity] = (window, count)
        if count > self.per_minute:
            raise _refuse(self.per_minute, now)

    async def close(self) -> None:
        """Holds nothing outside the process."""


class RedisRateLimiter:
    def __init__(self, url: str, per_minute: int) -> None:
        self.per_minute = per_minute
        self._redis = redis.asyncio.Redis.from_url(url, socket_timeout=1.0,
                                                   socket_connect_timeout=1.0)
        self._skip_until = 0.0

    async def check(self, identity: str) -> None:
        now = time.time()
        if now < self._skip_until:
            return
        counter = f"finetune:ratelimit:{identity}:{int(now // WINDOW_SECONDS)}"
        try:
            async with self._redis.pipeline() as pipe:
                count, _ = await pipe.incr(counter).expire(counter, 2 * WINDOW_SECONDS).execute()
        except redis.RedisError as exc:
            # The limiter guards the service; it must not take the API down with Redis, nor
            # make every request wait on a dead connection: it rests, and says so once.
            self._skip_until = now + OUTAGE_PAUSE_SECONDS
            logger.warning("rate limiter unavailable for %s s, requests let through: %s",
                           OUTAGE_PAUSE_SECONDS, exc)
            return
        if count > self.per_minute:
            raise _refuse(self.per_minute, now)

    async def close(self) -> None:
        await self._redis.aclose()


def make_rate_limiter(settings: Settings) -> RateLimiter:
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return RedisRateLimiter(settings.broker_url, settings.rate_limit_per_minute)
    return LocalRateLimiter(settings.rate_limit_per_minute)
