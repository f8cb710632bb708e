"""Small files in the layouts that fields distribute, written as their tools write them: the
official SQuAD JSON nesting, Stanford Alpaca's records, ShareGPT's conversations."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from tests.factories import CUE_WORDS, TOPIC_WORDS, qa_rows


def write_squad(path: Path, n: int, *, unanswerable: float = 0.0, seed: int = 0) -> Path:
    """`n` questions as the official SQuAD file nests them: articles of paragraphs of
    questions; version 2.0 (is_impossible, plausible_answers) when some are unanswerable."""
    version_2 = unanswerable > 0
    articles: list[dict[str, Any]] = []
    for number, row in enumerate(qa_rows(n, seed=seed, unanswerable=unanswerable)):
        answers = [{"text": text, "answer_start": start} for text, start in
                   zip(row["answers"]["text"], row["answers"]["answer_start"], strict=True)]
        question: dict[str, Any] = {"question": row["question"], "id": f"q{number:04d}",
                                    "answers": answers}
        if version_2:
            question["is_impossible"] = not answers
            if not answers:
                question["plausible_answers"] = [{"text": row["context"].split()[0],
                                                  "answer_start": 0}]
        if number % 6 == 0:
            articles.append({"title": f"Article_{len(articles)}", "paragraphs": []})
        articles[-1]["paragraphs"].append({"context": row["context"], "qas": [question]})
    path.write_text(json.dumps({"version": "v2.0" if version_2 else "1.1", "data": articles}))
    return path


def alpaca_records(n: int, *, seed: int = 0) -> list[dict[str, str]]:
    """Instruction records as Stanford Alpaca's alpaca_data.json holds them: some with an
    input, some without."""
    rng = random.Random(seed)
    records = []
    for number in range(n):
        topic, mood = rng.choice(TOPIC_WORDS), rng.choice(CUE_WORDS[rng.randrange(2)])
        record = {"instruction": "Name the topic of the sentence.",
                  "input": f"the {topic} was {mood}", "output": topic}
        if number % 3 == 0:
            record = {"instruction": f"Say something {mood} about {topic}.", "input": "",
                      "output": f"{topic} are {mood}"}
        records.append(record)
    return records


def sharegpt_records(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """Conversations as ShareGPT exports (and LLaMA-Factory's sharegpt format) hold them."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        topic, mood = rng.choice(TOPIC_WORDS), rng.choice(CUE_WORDS[rng.randrange(2)])
        records.append({"conversations": [
            {"from": "human", "value": f"how do you find {topic} ?"},
            {"from": "gpt", "value": f"{topic} are {mood}"},
            {"from": "human", "value": "why ?"},
            {"from": "gpt", "value": f"because {topic} are {mood}"}]})
    return records


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path
