"""text-classification with `dataset.multi_label`: any number of labels per text. One
sigmoid per label and binary cross-entropy; a label is predicted at `multi_label_threshold`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, EvalPrediction

from app.jobs.spec import JobSpec
from worker.training.metrics import Metrics, model_outputs, multi_label_metrics, multi_label_report
from worker.training.tasks import TaskRecipe


def head(label_names: list[str]) -> dict[str, Any]:
    return {"num_labels": len(label_names), "problem_type": "multi_label_classification",
            "id2label": dict(enumerate(label_names)),
            "label2id": {name: index for index, name in enumerate(label_names)}}


def _threshold(spec: JobSpec) -> float:
    return spec.hyperparameters.multi_label_threshold or 0.5


def metrics(spec: JobSpec, _: list[str]) -> Callable[[EvalPrediction], Metrics]:
    def compute(prediction: EvalPrediction) -> Metrics:
        return multi_label_metrics(model_outputs(prediction.predictions),
                                   np.asarray(prediction.label_ids), _threshold(spec))

    return compute


RECIPE = TaskRecipe(
    model_class=AutoModelForSequenceClassification, pipeline="text-classification", head=head,
    models_hint="Use an encoder such as BERT, RoBERTa, DistilBERT or MiniLM.",
    collator=lambda tokenizer, _: DataCollatorWithPadding(tokenizer), metrics=metrics,
    class_report=lambda outputs, labels, names, spec: multi_label_report(
        outputs, labels, names, _threshold(spec)))
