"""The official SQuAD JSON, v1.1 and v2.0: detection, flattening, and malformed records."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from app.datasets.inspection import DatasetFormatError
from app.datasets.squad import SQUAD_COLUMNS, is_squad_document, squad_rows

CONTEXT = ("Architecturally, the school has a Catholic character. Atop the Main Building's gold "
           "dome is a golden statue of the Virgin Mary.")

# The structure of the official train-v1.1.json, one article shortened.
SQUAD_V1 = {"version": "1.1", "data": [{
    "title": "University_of_Notre_Dame",
    "paragraphs": [{
        "context": CONTEXT,
        "qas": [
            {"answers": [{"answer_start": 92, "text": "a golden statue of the Virgin Mary"}],
             "question": "What sits on top of the Main Building?",
             "id": "5733be284776f41900661182"},
            {"answers": [{"answer_start": 34, "text": "Catholic"},
                         {"answer_start": 34, "text": "Catholic character"}],
             "question": "What character does the school have?",
             "id": "5733be284776f4190066117f"},
        ]}]}]}

# The structure of the official train-v2.0.json: an unanswerable question with the
# plausible answers that annotators wrote down.
SQUAD_V2 = {"version": "v2.0", "data": [
    {"title": "Normans", "paragraphs": [
        {"context": "The Normans were the people who gave their name to Normandy.",
         "qas": [
             {"question": "Who gave their name to Normandy?", "id": "56ddde6b9a695914005b9628",
              "answers": [{"text": "The Normans", "answer_start": 0}],
              "is_impossible": False},
             {"plausible_answers": [{"text": "Normans", "answer_start": 4}],
              "question": "Who gave their name to Brittany?", "id": "5ad39d53604f3c001a3fe8d1",
              "answers": [], "is_impossible": True},
         ]}]},
    {"title": "Computational_complexity_theory", "paragraphs": [
        {"context": "A problem is regarded as inherently difficult.",
         "qas": [{"question": "What is regarded as inherently difficult?",
                  "id": "56e16182e3433e1400422e28",
                  "answers": [{"text": "A problem", "answer_start": 0}],
                  "is_impossible": False}]}]},
]}


def _rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    # The document goes through JSON as an uploaded file would.
    return list(squad_rows(json.loads(json.dumps(document))))


def test_v1_rows() -> None:
    assert is_squad_document(SQUAD_V1)
    rows = _rows(SQUAD_V1)
    assert [tuple(row) for row in rows] == [SQUAD_COLUMNS] * 2
    assert rows[0] == {"id": "5733be284776f41900661182", "title": "University_of_Notre_Dame",
                       "question": "What sits on top of the Main Building?", "context": CONTEXT,
                       "answers": {"text": ["a golden statue of the Virgin Mary"],
                                   "answer_start": [92]}}
    assert rows[1]["answers"] == {"text": ["Catholic", "Catholic character"],
                                  "answer_start": [34, 34]}


def test_v2_unanswerable_question_has_no_answers() -> None:
    assert is_squad_document(SQUAD_V2)
    rows = _rows(SQUAD_V2)
    assert [row["id"] for row in rows] == ["56ddde6b9a695914005b9628",
                                           "5ad39d53604f3c001a3fe8d1",
                                           "56e16182e3433e1400422e28"]
    assert rows[0]["answers"] == {"text": ["The Normans"], "answer_start": [0]}
    assert rows[1]["answers"] == {"text": [], "answer_start": []}  # plausible ones are not
    assert rows[2]["title"] == "Computational_complexity_theory"


def test_lenient_where_the_official_files_are() -> None:
    document = copy.deepcopy(SQUAD_V1)
    del document["data"][0]["title"]
    qas = document["data"][0]["paragraphs"][0]["qas"]
    qas[0]["answers"][0]["answer_start"] = 91  # text and context differ by a character
    qas[1]["answers"] = []  # no answers: unanswerable, even without is_impossible
    del qas[1]["id"]
    qas.append({"question": "Unanswerable?", "id": 7, "is_impossible": True})
    rows = _rows(document)
    assert {row["title"] for row in rows} == {""}
    assert rows[0]["answers"]["answer_start"] == [91]
    assert rows[1]["answers"] == {"text": [], "answer_start": []}
    assert rows[1]["id"] == "data[0].paragraphs[0].qas[1]"
    assert (rows[2]["id"], rows[2]["answers"]["text"]) == ("7", [])


@pytest.mark.parametrize("document", [
    {"data": [{"text": "a", "label": 1}, {"text": "b", "label": 0}]},
    {"data": []},
    {"data": ["paragraphs"]},
    {"data": {"paragraphs": []}},
    {"version": "1.1", "data": [{"title": "x", "paragraphs": "not a list"}]},
    [{"paragraphs": []}],
    "data",
    None,
])
def test_other_json_is_not_squad(document: Any) -> None:
    assert not is_squad_document(document)


def _broken(change: str) -> dict[str, Any]:
    document = copy.deepcopy(SQUAD_V2)
    article = document["data"][0]
    paragraph = article["paragraphs"][0]
    qa = paragraph["qas"][0]
    edits = {
        "article": lambda: document["data"].append("Normans"),
        "paragraphs": lambda: document["data"][1].pop("paragraphs"),
        "title": lambda: article.update(title=["Normans"]),
        "paragraph": lambda: article["paragraphs"].append(None),
        "context": lambda: paragraph.pop("context"),
        "empty context": lambda: paragraph.update(context="  "),
        "qas": lambda: paragraph.update(qas={"question": "?"}),
        "qa": lambda: paragraph["qas"].append("Who?"),
        "question": lambda: qa.update(question=""),
        "id": lambda: qa.update(id=None),
        "answers": lambda: qa.pop("answers"),
        "answers type": lambda: qa.update(answers={"text": "The Normans"}),
        "answer": lambda: qa.update(answers=["The Normans"]),
        "text": lambda: qa["answers"][0].pop("text"),
        "answer_start": lambda: qa["answers"][0].update(answer_start="0"),
        "boolean start": lambda: qa["answers"][0].update(answer_start=True),
        "negative start": lambda: qa["answers"][0].update(answer_start=-1),
        "past the end": lambda: qa["answers"][0].update(answer_start=55),
        "impossible type": lambda: qa.update(is_impossible="false"),
        "impossible with answers": lambda: qa.update(is_impossible=True),
    }
    edits[change]()
    return document


@pytest.mark.parametrize(("change", "where", "problem"), [
    ("article", "data[2]:", "is a string, not an object"),
    ("paragraphs", "data[1]:", 'its "paragraphs" is missing, not a list'),
    ("title", "data[0]:", '"title" is an array'),
    ("paragraph", "data[0].paragraphs[1]:", "is null, not an object"),
    ("context", "data[0].paragraphs[0]:", '"context" is missing'),
    ("empty context", "data[0].paragraphs[0]:", '"context" is empty'),
    ("qas", "data[0].paragraphs[0]:", '"qas" is an object, not a list'),
    ("qa", "data[0].paragraphs[0].qas[2]:", "is a string, not an object"),
    ("question", 'qas[0] (id "56ddde6b9a695914005b9628"):', '"question" must be a non-empty'),
    # The id itself is wrong: the position alone names the record.
    ("id", "data[0].paragraphs[0].qas[0]: ", '"id" is null'),
    ("answers", 'qas[0] (id "56ddde6b9a695914005b9628"):', '"answers" is missing'),
    ("answers type", "qas[0] (id", '"answers" is an object'),
    ("answer", "qas[0] (id", "answers[0] is a string"),
    ("text", "qas[0] (id", 'the answer has no "text"'),
    ("answer_start", 'data[0].paragraphs[0].qas[0] (id "56ddde6b9a695914005b9628"): the answer',
     'the answer has no integer "answer_start" (answers[0]'),
    ("boolean start", "qas[0] (id", 'no integer "answer_start"'),
    ("negative start", "qas[0] (id", "at answer_start -1 (answers[0]) runs outside"),
    ("past the end", "qas[0] (id",
     "at answer_start 55 (answers[0]) runs outside the context, which has 60 characters"),
    ("impossible type", "qas[0] (id", '"is_impossible" is a string'),
    ("impossible with answers", "qas[0] (id", '"is_impossible" is true but it has answers'),
])
def test_malformed_record_is_named(change: str, where: str, problem: str) -> None:
    with pytest.raises(DatasetFormatError) as caught:
        _rows(_broken(change))
    error = caught.value
    assert error.code == "dataset_invalid_squad"
    assert where in error.message and problem in error.message, error.message


def test_data_that_is_not_a_list() -> None:
    with pytest.raises(DatasetFormatError) as caught:
        list(squad_rows({"data": {"paragraphs": []}}))
    assert caught.value.code == "dataset_invalid_squad"
    assert '"data" is an object, not a list of articles' in caught.value.message
