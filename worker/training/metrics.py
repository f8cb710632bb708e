"""The metrics of the tasks: classification, regression, perplexity; the per-class report.

Every value is a plain float, or None where the metric is undefined (a correlation with
constant predictions, say), so that metrics always serialise as valid JSON.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    hamming_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
    r2_score,
)

Metrics = dict[str, float | None]


def model_outputs(predictions: np.ndarray | tuple[np.ndarray, ...]) -> np.ndarray:
    """The logits (or regression values) among the outputs a model returned."""
    return np.asarray(predictions[0] if isinstance(predictions, tuple) else predictions)


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> Metrics:
    predicted = logits.argmax(axis=-1)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, average="macro", zero_division=0)
    return {"accuracy": float(accuracy_score(labels, predicted)), "precision": float(precision),
            "recall": float(recall), "f1": float(f1)}


def regression_metrics(values: np.ndarray, labels: np.ndarray) -> Metrics:
    predicted, labels = values.reshape(-1).astype(np.float64), labels.reshape(-1)
    return {"mse": _finite(mean_squared_error(labels, predicted)),
            "mae": _finite(mean_absolute_error(labels, predicted)),
            "r2": _finite(r2_score(labels, predicted)) if len(labels) > 1 else None,
            "pearson": _correlation(stats.pearsonr, predicted, labels),
            "spearman": _correlation(stats.spearmanr, predicted, labels)}


def multi_label_metrics(logits: np.ndarray, labels: np.ndarray, threshold: float) -> Metrics:
    """Each label on its own (a sigmoid, a threshold): micro and macro F1, subset accuracy
    (every label of a row right) and Hamming loss (the share of wrong label decisions)."""
    predicted = (_sigmoid(logits) >= threshold).astype(int)
    truth = labels.astype(int)
    micro = precision_recall_fscore_support(truth, predicted, average="micro", zero_division=0)
    _, _, macro_f1, _ = precision_recall_fscore_support(truth, predicted, average="macro",
                                                        zero_division=0)
    return {"f1_micro": float(micro[2]), "f1_macro": float(macro_f1),
            "precision_micro": float(micro[0]), "recall_micro": float(micro[1]),
            "subset_accuracy": float(accuracy_score(truth, predicted)),
            "hamming_loss": float(hamming_loss(truth, predicted))}


def multi_label_report(logits: np.ndarray, labels: np.ndarray, label_names: list[str],
                       threshold: float) -> dict[str, dict[str, float]]:
    precision, recall, f1, support = precision_recall_fscore_support(
        labels.astype(int), (_sigmoid(logits) >= threshold).astype(int), zero_division=0)
    return {name: {"precision": float(precision[index]), "recall": float(recall[index]),
                   "f1": float(f1[index]), "support": int(support[index])}
            for index, name in enumerate(label_names)}


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))


def per_class_report(logits: np.ndarray, labels: np.ndarray,
                     label_names: list[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, f1 and support of every class, by label name."""
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, logits.argmax(axis=-1), labels=list(range(len(label_names))), zero_division=0)
    return {name: {"precision": float(precision[index]), "recall": float(recall[index]),
                   "f1": float(f1[index]), "support": int(support[index])}
            for index, name in enumerate(label_names)}


def perplexity(metrics: dict[str, Any], prefix: str) -> Metrics:
    """`<prefix>_perplexity` from `<prefix>_loss`: a language model's usual score."""
    loss = metrics.get(f"{prefix}_loss")
    if not isinstance(loss, int | float):
        return {}
    # exp overflows past ~709: such a loss means the model has learnt nothing.
    return {f"{prefix}_perplexity": math.exp(loss) if loss < 700 else None}


def _correlation(statistic: Callable[..., object], predicted: np.ndarray,
                 labels: np.ndarray) -> float | None:
    # Undefined (not zero) when either side is constant, as early in training it often is.
    if len(labels) < 2 or np.ptp(predicted) == 0 or np.ptp(labels) == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        result = statistic(predicted, labels)
    return _finite(result.statistic)  # type: ignore[attr-defined]


def _finite(value: float) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None
