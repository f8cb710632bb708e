"""question-answering (extractive): the answer is a span of the context, found by the model.

Rows are SQuAD's (`answers` holding `text` and `answer_start` lists) or flat (an answer column
and optionally its start). A context longer than `max_seq_length` is cut into windows that
overlap by `doc_stride` tokens; a window without the answer learns to point at the first
token, which is also how an unanswerable question (SQuAD 2.0, `allow_unanswerable`) is marked.
At evaluation the windows' best spans are mapped back to text through the tokenizer's offsets
and scored as SQuAD scores them: exact match and token F1 against every gold answer.
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
from datasets import Dataset
from transformers import AutoModelForQuestionAnswering, EvalPrediction, PreTrainedTokenizerBase

from app.jobs.spec import JobSpec
from app.jobs.tasks.question_answering import TASK
from worker.training.data import PreparedData, model_length
from worker.training.errors import DatasetInvalid, InvalidSpec
from worker.training.lora import LoraHead
from worker.training.metrics import Metrics
from worker.training.tasks import ENCODER_HINT, Evaluated, TaskRecipe, padded_batches

# Start and end candidates tried per window: the SQuAD reference implementation's n-best.
CANDIDATES = 20
# What evaluated windows carry besides the model's inputs, to turn spans back into text.
EXAMPLE_ID, OFFSETS, CONTEXT, GOLD = "example_id", "offset_mapping", "context", "gold_answers"


def tokenize(prepared: PreparedData, tokenizer: PreTrainedTokenizerBase,
             spec: JobSpec) -> dict[str, Dataset]:
    if not tokenizer.is_fast:
        raise InvalidSpec(f"{spec.model} has no fast tokenizer, which mapping answers to "
                          "tokens needs", hint=RECIPE.models_hint)
    return {role: _windows(dataset, role, tokenizer, spec, keep_text=role != "train")
            for role, dataset in prepared.splits().items()}


def _windows(dataset: Dataset, role: str, tokenizer: PreTrainedTokenizerBase, spec: JobSpec,
             *, keep_text: bool) -> Dataset:
    data, hyper = spec.dataset, spec.hyperparameters
    length = model_length(tokenizer, hyper.max_seq_length)
    # Where the model's own limit cut max_seq_length, a stride that no longer fits shrinks too.
    stride = hyper.doc_stride if (hyper.doc_stride or 0) < length // 2 else length // 4
    answers_of = _answer_reader(spec, role)

    def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        contexts = batch[data.context_column]
        try:
            encoded = tokenizer([question.lstrip() for question in batch[data.question_column]],
                                contexts, truncation="only_second", max_length=length,
                                stride=stride, return_overflowing_tokens=True,
                                return_offsets_mapping=True)
        except Exception as exc:
            # The tokenizers library raises a plain Exception, known by its message only.
            if not str(exc).startswith("Truncation error"):
                raise
            raise DatasetInvalid(
                f"a question of the {role} data leaves no room for its context in "
                f"max_seq_length={length} tokens with doc_stride={stride}: raise "
                "max_seq_length or lower doc_stride") from exc
        rows = encoded.pop("overflow_to_sample_mapping")
        answers = [answers_of(batch, row, indices[row]) for row in range(len(contexts))]
        extra: dict[str, list[Any]] = defaultdict(list)
        for window, row in enumerate(rows):
            in_context = [part == 1 for part in encoded.sequence_ids(window)]
            offsets = encoded["offset_mapping"][window]
            start, end = _answer_tokens(offsets, in_context, answers[row])
            extra["start_positions"].append(start)
            extra["end_positions"].append(end)
            if keep_text:
                extra[EXAMPLE_ID].append(indices[row])
                extra[OFFSETS].append([list(pair) if inside else None
                                       for pair, inside in zip(offsets, in_context, strict=True)])
                extra[CONTEXT].append(contexts[row])
                extra[GOLD].append([text for text, _ in answers[row]])
        del encoded["offset_mapping"]
        return {**encoded, **extra}

    return dataset.map(encode, batched=True, with_indices=True,
                       remove_columns=dataset.column_names)


def _answer_reader(spec: JobSpec, role: str) -> Callable[[dict[str, list[Any]], int, int],
                                                         list[tuple[str, int]]]:
    """Reads a row's answers as (text, first character) pairs, checked against the context."""
    data = spec.dataset

    def read(batch: dict[str, list[Any]], row: int, number: int) -> list[tuple[str, int]]:
        context = batch[data.context_column][row]
        if data.answer_column is None:
            value = batch[data.answers_column][row] or {}
            texts, starts = _as_list(value.get("text")), _as_list(value.get("answer_start"))
            if len(texts) != len(starts):
                raise DatasetInvalid(f"row {number} of the {role} data has {len(texts)} answer "
                                     f"texts but {len(starts)} answer_start values in "
                                     f"{data.answers_column!r}")
        else:
            text = batch[data.answer_column][row] or ""
            texts = [text] if text.strip() else []
            given = batch[data.answer_start_column][row] if data.answer_start_column else None
            starts = [given if given is not None else context.find(text)] if texts else []
        answers = [(str(text), _checked_start(context, str(text), start, role, number))
                   for text, start in zip(texts, starts, strict=True)]
        if not answers and not data.allow_unanswerable:
            raise DatasetInvalid(f"row {number} of the {role} data has no answer: set "
                                 "dataset.allow_unanswerable for SQuAD 2.0 style data")
        return answers

    return read


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _checked_start(context: str, text: str, start: Any, role: str, number: int) -> int:
    if not isinstance(start, int) or start < 0 or context[start:start + len(text)] != text:
        found = context[start:start + len(text)] if isinstance(start, int) and start >= 0 else ""
        raise DatasetInvalid(
            f"row {number} of the {role} data: the answer {text[:80]!r} is not in its context "
            f"at answer_start={start!r} (the context has {found[:80]!r} there)")
    return start


def _answer_tokens(offsets: list[tuple[int, int]], in_context: list[bool],
                   answers: list[tuple[str, int]]) -> tuple[int, int]:
    """The first and last token of the first answer, or (0, 0), the first token, when this
    window does not hold the whole answer or there is none."""
    if not answers:
        return 0, 0
    text, first_char = answers[0]
    last_char = first_char + len(text)
    context_tokens = [index for index, inside in enumerate(in_context) if inside]
    if (not context_tokens or offsets[context_tokens[0]][0] > first_char
            or offsets[context_tokens[-1]][1] < last_char):
        return 0, 0
    start = next(index for index in context_tokens if offsets[index][1] > first_char)
    end = next(index for index in reversed(context_tokens) if offsets[index][0] < last_char)
    return start, end


def predicted_answers(start_logits: np.ndarray, end_logits: np.ndarray, windows: Dataset,
                      max_answer_length: int, allow_unanswerable: bool) -> dict[int, str]:
    """The best span of each example over all its windows, as text; "" for no answer."""
    by_example: dict[int, list[int]] = defaultdict(list)
    for window, example in enumerate(windows[EXAMPLE_ID]):
        by_example[example].append(window)
    offsets, contexts = windows[OFFSETS], windows[CONTEXT]
    answers = {}
    for example, example_windows in by_example.items():
        best_score, best_text, no_answer_score = -np.inf, "", np.inf
        for window in example_windows:
            starts, ends, spans = start_logits[window], end_logits[window], offsets[window]
            no_answer_score = min(no_answer_score, starts[0] + ends[0])
            for first in np.argsort(starts)[-CANDIDATES:]:
                for last in np.argsort(ends)[-CANDIDATES:]:
                    if (max(first, last) >= len(spans) or spans[first] is None
                            or spans[last] is None
                            or not 0 <= last - first < max_answer_length):
                        continue
                    if (score := starts[first] + ends[last]) > best_score:
                        best_score = score
                        best_text = contexts[window][spans[first][0]:spans[last][1]]
        unanswered = allow_unanswerable and no_answer_score > best_score
        answers[example] = "" if unanswered else best_text
    return answers


def _normalized_words(text: str) -> list[str]:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(char for char in text.lower() if char not in string.punctuation)
    return re.sub(r"\b(a|an|the)\b", " ", text).split()


def _f1(predicted: str, gold: str) -> float:
    guess, truth = _normalized_words(predicted), _normalized_words(gold)
    if not guess or not truth:
        return float(guess == truth)
    common = sum((Counter(guess) & Counter(truth)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(guess), common / len(truth)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predicted: dict[int, str], gold: dict[int, list[str]]) -> Metrics:
    """Exact match and F1, each the best over an example's gold answers, averaged; an
    unanswerable example's only gold answer is the empty one."""
    exact, f1 = [], []
    for example, guess in predicted.items():
        truths = gold[example] or [""]
        exact.append(max(float(_normalized_words(guess) == _normalized_words(truth))
                         for truth in truths))
        f1.append(max(_f1(guess, truth) for truth in truths))
    return {"exact_match": float(np.mean(exact)) if exact else None,
            "f1": float(np.mean(f1)) if f1 else None}


def metrics(evaluated: Evaluated) -> Callable[[EvalPrediction], Metrics]:
    spec, windows = evaluated.spec, evaluated.split
    gold = dict(zip(windows[EXAMPLE_ID], windows[GOLD], strict=True))
    max_answer_length = spec.hyperparameters.max_answer_length or 1

    def compute(prediction: EvalPrediction) -> Metrics:
        start_logits, end_logits = prediction.predictions[:2]
        return squad_scores(predicted_answers(np.asarray(start_logits), np.asarray(end_logits),
                                              windows, max_answer_length,
                                              spec.dataset.allow_unanswerable), gold)

    return compute


RECIPE = TaskRecipe(
    task=TASK, model_class=AutoModelForQuestionAnswering, pipeline=None, head=lambda _: {},
    models_hint=f"{ENCODER_HINT} Its tokenizer must be a fast one.", collator=padded_batches,
    metrics=metrics, tokenize=tokenize,
    # peft's QUESTION_ANS model drops token_type_ids on the way to the model, so BERT
    # would not know question from context: the head is kept trainable by name.
    lora=LoraHead(trained_in_full=("qa_outputs",), has_head=True))
