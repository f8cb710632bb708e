"""Facts that never change once written (a key's prefix, a job's stored spec), read from the
database once per process instead of on every request."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

Key = TypeVar("Key")
Value = TypeVar("Value")


class Remembered(Generic[Key, Value]):
    """At most `size` facts, emptied whole when full: simple, and a fact read again costs only
    the query it saved."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._values: dict[Key, Value] = {}

    def get(self, key: Key, read: Callable[[], Value]) -> Value:
        # Threads share it (a thread's route, the event loop's): no check-then-read, so an
        # emptying in between never makes a known fact fail.
        try:
            return self._values[key]
        except KeyError:
            value = read()
        self._make_room(1)
        self._values[key] = value
        return value

    def get_many(self, keys: Iterable[Key],
                 read: Callable[[set[Key]], Iterable[tuple[Key, Value]]]) -> dict[Key, Value]:
        """The values of `keys`, those not yet known read in one go (`read` answers pairs;
        a key it does not answer is left out)."""
        found: dict[Key, Value] = {}
        unknown: set[Key] = set()
        for key in set(keys):
            try:
                found[key] = self._values[key]
            except KeyError:
                unknown.add(key)
        if unknown:
            fresh = dict(read(unknown))
            self._make_room(len(fresh))
            self._values.update(fresh)
            found.update(fresh)
        return found

    def _make_room(self, count: int) -> None:
        if len(self._values) + count > self._size:
            self._values.clear()
