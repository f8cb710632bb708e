"""token-classification: a tag per word (named entities, parts of speech).

Words are split into sub-word tokens; the first token of each word carries the word's tag and
the rest are left out of the loss, unless `label_all_subtokens` gives them the tag too. Scores
are entity-level precision, recall and F1 (seqeval, when the tags are IOB: `O`, `B-X`, `I-X`)
and token accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from datasets import Dataset
from peft import TaskType
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from sklearn.metrics import classification_report as sklearn_report
from transformers import (
    AutoModelForTokenClassification,
    DataCollatorForTokenClassification,
    EvalPrediction,
    PreTrainedTokenizerBase,
)

from app.jobs.spec import JobSpec
from app.jobs.tasks.token_classification import TASK
from worker.training.data import PreparedData, model_length
from worker.training.errors import InvalidSpec
from worker.training.labels import LABELS
from worker.training.lora import LoraHead
from worker.training.metrics import Metrics, model_outputs
from worker.training.tasks import Evaluated, TaskRecipe, labelled_head

IGNORED = -100


def tokenize(prepared: PreparedData, tokenizer: PreTrainedTokenizerBase,
             spec: JobSpec) -> dict[str, Dataset]:
    if not tokenizer.is_fast:
        raise InvalidSpec(f"{spec.model} has no fast tokenizer, which aligning tags to "
                          "sub-words needs", hint=RECIPE.models_hint)
    length = model_length(tokenizer, spec.hyperparameters.max_seq_length)
    words_column, every_piece = spec.dataset.tokens_column, spec.dataset.label_all_subtokens

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        encoded = tokenizer([[str(word) for word in words] for words in batch[words_column]],
                            is_split_into_words=True, truncation=True, max_length=length)
        aligned = []
        for row, tags in enumerate(batch[LABELS]):
            previous, labels = None, []
            for word in encoded.word_ids(row):
                first = word is not None and word != previous
                labels.append(tags[word] if word is not None and (first or every_piece)
                              else IGNORED)
                previous = word
            aligned.append(labels)
        return {**encoded, LABELS: aligned}

    return {role: dataset.map(encode, batched=True, remove_columns=dataset.column_names)
            for role, dataset in prepared.splits().items()}


def _tag_sequences(logits: np.ndarray, labels: np.ndarray,
                   names: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    """Predicted and true tags of the labelled positions, row by row."""
    predicted = logits.argmax(axis=-1)
    guesses, truths = [], []
    for guess_row, label_row in zip(predicted, labels, strict=True):
        kept = label_row != IGNORED
        guesses.append([names[i] for i in guess_row[kept]])
        truths.append([names[i] for i in label_row[kept]])
    return guesses, truths


def _is_iob(names: list[str]) -> bool:
    return all(name == "O" or name[:2] in ("B-", "I-") for name in names)


def metrics(evaluated: Evaluated) -> Callable[[EvalPrediction], Metrics]:
    names = evaluated.label_names

    def compute(prediction: EvalPrediction) -> Metrics:
        guesses, truths = _tag_sequences(model_outputs(prediction.predictions),
                                         np.asarray(prediction.label_ids), names)
        flat_guesses = [tag for row in guesses for tag in row]
        flat_truths = [tag for row in truths for tag in row]
        scores: Metrics = {"accuracy": float(accuracy_score(flat_truths, flat_guesses))
                           if flat_truths else None}
        if _is_iob(names):
            scores |= {"precision": float(precision_score(truths, guesses, zero_division=0)),
                       "recall": float(recall_score(truths, guesses, zero_division=0)),
                       "f1": float(f1_score(truths, guesses, zero_division=0))}
        else:  # tags that are not entities (parts of speech): macro scores over the tags
            precision, recall, f1, _ = precision_recall_fscore_support(
                flat_truths, flat_guesses, average="macro", zero_division=0)
            scores |= {"precision": float(precision), "recall": float(recall), "f1": float(f1)}
        return scores

    return compute


def report(logits: np.ndarray, labels: np.ndarray, names: list[str],
           _: JobSpec) -> dict[str, dict[str, float]]:
    """Per entity type (IOB tags) or per tag: precision, recall, F1 and support."""
    guesses, truths = _tag_sequences(logits, labels, names)
    if _is_iob(names):
        table = classification_report(truths, guesses, output_dict=True, zero_division=0)
    else:
        table = sklearn_report([t for row in truths for t in row],
                               [g for row in guesses for g in row], output_dict=True,
                               zero_division=0)
    return {name: {"precision": float(row["precision"]), "recall": float(row["recall"]),
                   "f1": float(row["f1-score"]), "support": int(row["support"])}
            for name, row in table.items() if isinstance(row, dict) and " avg" not in name}


RECIPE = TaskRecipe(
    task=TASK, model_class=AutoModelForTokenClassification, pipeline="token-classification",
    head=labelled_head,
    models_hint="Use an encoder with a fast tokenizer, such as BERT, RoBERTa or DistilBERT.",
    collator=lambda tokenizer, _: DataCollatorForTokenClassification(tokenizer),
    metrics=metrics, class_report=report, tokenize=tokenize,
    # Byte-level BPE (RoBERTa, GPT-2) marks a word's start with its leading space; words
    # handed over one by one must get it too, as they would in running text.
    tokenizer_options={"add_prefix_space": True},
    lora=LoraHead(TaskType.TOKEN_CLS, has_head=True))
