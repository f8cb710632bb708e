"""The official SQuAD JSON (v1.1 and v2.0): articles of paragraphs of questions, flattened to
one row per question as the Hugging Face `squad` and `squad_v2` datasets hold them:
{"id", "title", "question", "context", "answers": {"text": [...], "answer_start": [...]}}.

A question without answers (v2.0's `is_impossible`, or an empty "answers" list) is
unanswerable and gets empty answer lists; v2.0's `plausible_answers` are not answers.
Every record is checked, and a DatasetFormatError names it by its place in the document
and its id, so that a user can find it.

Standard library only: the API inspects these files, and the worker reads them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from app.datasets.inspection import DatasetFormatError

SQUAD_COLUMNS = ("id", "title", "question", "context", "answers")

_JSON_TYPE_NAMES = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
                    list: "an array", dict: "an object", type(None): "null"}


def is_squad_document(document: Any) -> bool:
    """Whether a parsed JSON document looks like SQuAD: {"data": [{"paragraphs": [...]}, ...]}.
    Only the first article is looked at; squad_rows checks the rest."""
    if not isinstance(document, dict):
        return False
    data = document.get("data")
    return (isinstance(data, list) and bool(data) and isinstance(data[0], dict)
            and isinstance(data[0].get("paragraphs"), list))


def squad_rows(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One flat row per question, in document order; raises DatasetFormatError
    (code dataset_invalid_squad) at the first malformed record."""
    data = document.get("data")
    if not isinstance(data, list):
        raise DatasetFormatError(f'The SQuAD document\'s "data" is {_kind(data)}, not a list '
                                 'of articles such as {"title": "...", "paragraphs": [...]}.',
                                 code="dataset_invalid_squad")
    for article_number, article in enumerate(data):
        where = f"data[{article_number}]"
        article = _object(article, where, '{"title": "...", "paragraphs": [...]}')
        title = article.get("title", "")
        if not isinstance(title, str):
            raise _invalid(where, f'its "title" is {_kind(title)}, not a string')
        for paragraph_number, paragraph in enumerate(_list(article, "paragraphs", where)):
            yield from _paragraph_rows(paragraph, f"{where}.paragraphs[{paragraph_number}]",
                                       title)


def _paragraph_rows(paragraph: Any, where: str, title: str) -> Iterator[dict[str, Any]]:
    paragraph = _object(paragraph, where, '{"context": "...", "qas": [...]}')
    context = paragraph.get("context")
    if not isinstance(context, str) or not context.strip():
        shown = "is empty" if isinstance(context, str) else f"is {_kind(context)}"
        if "context" not in paragraph:
            shown = "is missing"
        raise _invalid(where, f'its "context" {shown}; every paragraph needs its text as a '
                       "non-empty string")
    for number, qa in enumerate(_list(paragraph, "qas", where)):
        qa_where = f"{where}.qas[{number}]"
        qa = _object(qa, qa_where, '{"id": "...", "question": "...", "answers": [...]}')
        qa_id = _question_id(qa, qa_where)
        named = f'{qa_where} (id "{_shorten(qa_id)}")' if "id" in qa else qa_where
        question = qa.get("question")
        if not isinstance(question, str) or not question.strip():
            raise _invalid(named, 'the "question" must be a non-empty string')
        texts, starts = _answers(qa, named, context)
        yield {"id": qa_id, "title": title, "question": question, "context": context,
               "answers": {"text": texts, "answer_start": starts}}


def _question_id(qa: dict[str, Any], where: str) -> str:
    # Without an id, the question's place names it: unique within the document, and stable.
    qa_id = qa.get("id", where)
    if isinstance(qa_id, int) and not isinstance(qa_id, bool):
        return str(qa_id)
    if not isinstance(qa_id, str) or not qa_id:
        raise _invalid(where, f'its "id" is {_kind(qa_id)}; ids must be non-empty strings')
    return qa_id


def _answers(qa: dict[str, Any], where: str, context: str) -> tuple[list[str], list[int]]:
    impossible = qa.get("is_impossible", False)
    if not isinstance(impossible, bool):
        raise _invalid(where, f'"is_impossible" is {_kind(impossible)}, not true or false')
    if "answers" not in qa and impossible:
        return [], []
    answers = qa.get("answers")
    if not isinstance(answers, list):
        shown = "is missing" if "answers" not in qa else f"is {_kind(answers)}"
        raise _invalid(where, f'its "answers" {shown}; give a list of '
                       '{"text": "...", "answer_start": 0}, or [] with "is_impossible": true '
                       "for a question the context does not answer")
    if impossible and answers:
        raise _invalid(where, '"is_impossible" is true but it has answers; remove them (put '
                       'them in "plausible_answers") or set "is_impossible" to false')
    texts: list[str] = []
    starts: list[int] = []
    for number, answer in enumerate(answers):
        text, start = _answer(answer, where, f"answers[{number}]", context)
        texts.append(text)
        starts.append(start)
    return texts, starts


def _answer(answer: Any, where: str, which: str, context: str) -> tuple[str, int]:
    if not isinstance(answer, dict):
        raise _invalid(where, f'{which} is {_kind(answer)}, not an answer such as '
                       '{"text": "...", "answer_start": 0}')
    text, start = answer.get("text"), answer.get("answer_start")
    if not isinstance(text, str) or not text:
        raise _invalid(where, f'the answer has no "text" ({which} must give the answer\'s '
                       "words as a non-empty string)")
    if not isinstance(start, int) or isinstance(start, bool):
        raise _invalid(where, f'the answer has no integer "answer_start" ({which} must give '
                       "the character offset of its text in the context, counted from 0)")
    if start < 0 or start + len(text) > len(context):
        raise _invalid(where, f'the answer "{_shorten(text)}" at answer_start {start} '
                       f"({which}) runs outside the context, which has {len(context)} "
                       "characters; answer_start counts characters from 0")
    return text, start


def _object(value: Any, where: str, example: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(where, f"is {_kind(value)}, not an object such as {example}")
    return value


def _list(record: dict[str, Any], key: str, where: str) -> list[Any]:
    value = record.get(key)
    if not isinstance(value, list):
        shown = "is missing" if key not in record else f"is {_kind(value)}"
        raise _invalid(where, f'its "{key}" {shown}, not a list')
    return value


def _kind(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _invalid(where: str, problem: str) -> DatasetFormatError:
    return DatasetFormatError(f"{where}: {problem}.", code="dataset_invalid_squad")
