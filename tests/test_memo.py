"""`Remembered`: facts that never change, read once per process."""

from __future__ import annotations

from app.memo import Remembered


def test_a_fact_is_read_once() -> None:
    reads: list[str] = []
    remembered: Remembered[str, int] = Remembered()
    assert remembered.get("a", lambda: reads.append("a") or 1) == 1
    assert remembered.get("a", lambda: reads.append("a") or 2) == 1
    assert reads == ["a"]


def test_many_facts_read_in_one_go_and_only_the_unknown_ones() -> None:
    asked: list[set[str]] = []

    def read(unknown: set[str]) -> list[tuple[str, str]]:
        asked.append(unknown)
        return [(key, key.upper()) for key in unknown if key != "gone"]

    remembered: Remembered[str, str] = Remembered()
    assert remembered.get_many(["a", "b", "gone"], read) == {"a": "A", "b": "B"}
    assert remembered.get_many(["b", "c"], read) == {"b": "B", "c": "C"}
    assert asked == [{"a", "b", "gone"}, {"c"}]


def test_a_full_memory_is_emptied_and_still_answers() -> None:
    remembered: Remembered[int, int] = Remembered(size=2)
    for key in range(5):
        assert remembered.get(key, lambda key=key: key * 10) == key * 10
    reads: list[int] = []
    assert remembered.get(0, lambda: reads.append(0) or 0) == 0
    assert reads == [0], "0 was dropped when the memory filled up, so it is read again"
