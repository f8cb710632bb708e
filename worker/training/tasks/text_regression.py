"""text-regression: one number per text (or text pair), mean squared error."""

from __future__ import annotations

from typing import Any

import numpy as np
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, EvalPrediction

from worker.training.metrics import Metrics, model_outputs, regression_metrics
from worker.training.tasks import TaskRecipe


def head(_: list[str]) -> dict[str, Any]:
    return {"num_labels": 1, "problem_type": "regression"}


def compute_metrics(prediction: EvalPrediction) -> Metrics:
    return regression_metrics(model_outputs(prediction.predictions),
                              np.asarray(prediction.label_ids))


RECIPE = TaskRecipe(model_class=AutoModelForSequenceClassification,
                    pipeline="text-classification", head=head,
                    models_hint="Use an encoder such as BERT, RoBERTa, DistilBERT or MiniLM.",
                    collator=lambda tokenizer, _: DataCollatorWithPadding(tokenizer),
                    metrics=lambda _spec, _names: compute_metrics)
