"""CoNLL files for token classification: one word per line with its tag in the last field
(other fields between are ignored), a blank line between sentences, `-DOCSTART-` lines
skipped. Each sentence becomes a row {"tokens": [...], "tags": [...]}.

Standard library only: the API inspects these files, and the worker reads them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

COLUMNS = ("tokens", "tags")


class ConllError(ValueError):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


def conll_sentences(lines: Iterable[str]) -> Iterator[dict[str, list[str]]]:
    tokens: list[str] = []
    tags: list[str] = []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            if tokens:
                yield {"tokens": tokens, "tags": tags}
                tokens, tags = [], []
            continue
        if fields[0] == "-DOCSTART-":
            continue
        if len(fields) < 2:
            raise ConllError(f"Line {number} holds {fields[0]!r} but no tag: CoNLL lines are "
                             "a word and its tag separated by whitespace, with a blank line "
                             "between sentences.", number)
        tokens.append(fields[0])
        tags.append(fields[-1])
    if tokens:
        yield {"tokens": tokens, "tags": tags}
