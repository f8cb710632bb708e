"""question-answering: spans of the context, windows over long contexts, SQuAD scores."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from tests.factories import predicted_answer, qa_rows, write_rows
from tests.training.helpers import RecordingSink, data_files, make_spec
from worker.training.data import PreparedData
from worker.training.errors import DatasetInvalid
from worker.training.tasks.question_answering import squad_scores, tokenize
from worker.training.trainer import run_training


@pytest.mark.parametrize(("family", "unanswerable"), [("bert", 0.0), ("roberta", 0.2)])
def test_learns_to_find_the_answer_in_the_context(tmp_path: Path,
                                                   tiny_models: dict[str, Path], family: str,
                                                   unanswerable: float,
                                                   sink: RecordingSink) -> None:
    files = data_files(
        write_rows(tmp_path / "train.jsonl", qa_rows(300, unanswerable=unanswerable)),
        write_rows(tmp_path / "validation.jsonl", qa_rows(60, seed=1, unanswerable=unanswerable)))

    def run(hyperparameters: dict, out: str) -> dict:
        # fp32 named: the bar is the tiny model's in fp32, and `auto` is bf16 autocast on CPUs
        # with native bf16, where the same 30 epochs fall short of it.
        spec = make_spec("question-answering", hyperparameters=hyperparameters,
                         dataset={"validation": "uploaded-val",
                                  "allow_unanswerable": unanswerable > 0},
                         compute={"precision": "fp32"})
        return run_training(spec, files, str(tiny_models[family]), tmp_path / out, events=sink)

    untrained = run({"max_steps": 1, "learning_rate": 1e-9}, "untrained")
    # 30 epochs: at 20, some seeds stop short of the bar.
    trained = run({"epochs": 30, "learning_rate": 5e-3}, "trained")

    assert trained["eval_exact_match"] >= 0.8 > untrained["eval_exact_match"] + 0.3
    assert trained["eval_f1"] >= trained["eval_exact_match"]
    model_dir = tmp_path / "trained" / "model"
    # Words of the toy data only: a tiny model knows nothing else.
    assert predicted_answer(model_dir, "what topic ?",
                            "the plot was trains lovely film") == "trains"
    assert "AutoModelForQuestionAnswering" in (model_dir / "README.md").read_text()


def test_long_contexts_become_overlapping_windows(tiny_bert: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    context = " ".join(["the film was long"] * 20 + ["it was about cats"] + ["and slow"] * 5)
    start = context.index("cats")
    rows = Dataset.from_list([{"question": "what topic ?", "context": context,
                               "answers": {"text": ["cats"], "answer_start": [start]}}])
    spec = make_spec("question-answering",
                     hyperparameters={"max_seq_length": 32, "doc_stride": 8}).resolved()
    windows = tokenize(PreparedData(rows, rows, None, []), tokenizer, spec)

    train = windows["train"]
    assert len(train) > 3
    answered = [w for w in train if w["start_positions"] != 0]
    assert len(answered) >= 1 and all(len(w["input_ids"]) <= 32 for w in train)
    for window in answered:
        span = window["input_ids"][window["start_positions"]:window["end_positions"] + 1]
        assert tokenizer.decode(span) == "cats"
    # Windows overlap: consecutive windows share doc_stride context tokens.
    first, second = train[0]["input_ids"], train[1]["input_ids"]
    assert first[-1 - 8:-1] == second[second.index(tokenizer.sep_token_id) + 1:][:8]
    evaluated = windows["validation"]
    assert set(evaluated["example_id"]) == {0} and len(evaluated) == len(train)
    assert "offset_mapping" not in train.column_names


@pytest.mark.parametrize(("row", "words"), [
    ({"answers": {"text": [], "answer_start": []}}, "set dataset.allow_unanswerable"),
    ({"answers": {"text": ["cats"], "answer_start": [3]}}, "not in its context at answer_start=3"),
    ({"answers": {"text": ["cats", "dogs"], "answer_start": [0]}}, "2 answer texts but 1"),
])
def test_bad_answers_are_named(tiny_bert: Path, row: dict, words: str) -> None:
    rows = Dataset.from_list([{"question": "what topic ?", "context": "cats and dogs", **row}])
    with pytest.raises(DatasetInvalid, match=words):
        tokenize(PreparedData(rows, None, None, []), AutoTokenizer.from_pretrained(tiny_bert),
                 make_spec("question-answering").resolved())


def test_flat_columns_find_the_answer_in_the_context(tiny_bert: Path) -> None:
    rows = Dataset.from_list([{"q": "what topic ?", "c": "a film about cats", "a": "cats"}])
    spec = make_spec("question-answering", dataset={
        "question_column": "q", "context_column": "c", "answer_column": "a"}).resolved()
    [window] = tokenize(PreparedData(rows, None, None, []),
                        AutoTokenizer.from_pretrained(tiny_bert), spec)["train"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    span = window["input_ids"][window["start_positions"]:window["end_positions"] + 1]
    assert tokenizer.decode(span) == "cats"


def test_a_question_too_long_for_its_window_is_named(tiny_bert: Path) -> None:
    rows = Dataset.from_list([{"question": "what " * 40, "context": "cats and dogs",
                               "answers": {"text": ["cats"], "answer_start": [0]}}])
    spec = make_spec("question-answering", hyperparameters={"max_seq_length": 32}).resolved()
    with pytest.raises(DatasetInvalid, match="raise max_seq_length or lower doc_stride"):
        tokenize(PreparedData(rows, None, None, []), AutoTokenizer.from_pretrained(tiny_bert),
                 spec)


def test_squad_scores_normalise_and_take_the_best_gold_answer() -> None:
    predicted = {0: "The Cats!", 1: "big dogs", 2: "", 3: "rain"}
    gold = {0: ["cats"], 1: ["dogs", "the big dogs"], 2: [], 3: ["snow"]}
    scores = squad_scores(predicted, gold)
    assert scores["exact_match"] == pytest.approx(3 / 4)
    assert scores["f1"] == pytest.approx(3 / 4)
    assert squad_scores({0: "big cats"}, {0: ["cats"]})["f1"] == pytest.approx(2 / 3)
