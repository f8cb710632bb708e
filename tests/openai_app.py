"""What the OpenAI-compatible tests share: chats in OpenAI's fine-tuning format, and the
routes of an app."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI

COLOURS = {"cats": "grey", "dogs": "brown", "rain": "blue", "trains": "red"}


def chats(n: int, *, system: bool = False) -> list[dict[str, Any]]:
    """`n` chats asking the colour of a topic, answered with it: a learnable fixed answer."""
    topics = list(COLOURS)
    preamble = [{"role": "system", "content": "Answer with a colour."}] if system else []
    return [{"messages": [*preamble, {"role": "user", "content": f"what colour are {topic} ?"},
                          {"role": "assistant", "content": COLOURS[topic]}]}
            for topic in (topics[i % len(topics)] for i in range(n))]


def routes_of(app: FastAPI) -> Iterator[Any]:
    """Every route of `app`, those of included routers too."""
    def walk(routes: list[Any]) -> Iterator[Any]:
        for route in routes:
            nested = getattr(route, "original_router", None)
            yield from walk(nested.routes) if nested is not None else (route,)

    yield from walk(app.router.routes)
