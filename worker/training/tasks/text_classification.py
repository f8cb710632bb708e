"""text-classification: one label per text (or text pair), cross-entropy over the classes."""

from __future__ import annotations

from typing import Any

import numpy as np
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, EvalPrediction

from worker.training.metrics import (
    Metrics,
    classification_metrics,
    model_outputs,
    per_class_report,
)
from worker.training.tasks import TaskRecipe


def head(label_names: list[str]) -> dict[str, Any]:
    # The label names become id2label, so the saved model predicts the dataset's own names.
    return {"num_labels": len(label_names), "problem_type": "single_label_classification",
            "id2label": dict(enumerate(label_names)),
            "label2id": {name: index for index, name in enumerate(label_names)}}


def compute_metrics(prediction: EvalPrediction) -> Metrics:
    return classification_metrics(model_outputs(prediction.predictions),
                                  np.asarray(prediction.label_ids))


RECIPE = TaskRecipe(model_class=AutoModelForSequenceClassification,
                    pipeline="text-classification", head=head,
                    models_hint="Use an encoder such as BERT, RoBERTa, DistilBERT or MiniLM.",
                    collator=lambda tokenizer, _: DataCollatorWithPadding(tokenizer),
                    metrics=lambda _spec, _names: compute_metrics,
                    class_report=lambda outputs, labels, names, _: per_class_report(
                        outputs, labels, names))
