"""text-classification with `dataset.multi_label`: any number of labels per text. One
sigmoid per label and binary cross-entropy; a label is predicted at `multi_label_threshold`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from peft import TaskType
from transformers import AutoModelForSequenceClassification, EvalPrediction

from app.jobs.tasks.text_classification import TASK
from worker.training.lora import LoraHead
from worker.training.metrics import Metrics, model_outputs, multi_label_metrics, multi_label_report
from worker.training.tasks import ENCODER_HINT, Evaluated, TaskRecipe, labelled_head, padded_batches


def metrics(evaluated: Evaluated) -> Callable[[EvalPrediction], Metrics]:
    def compute(prediction: EvalPrediction) -> Metrics:
        return multi_label_metrics(model_outputs(prediction.predictions),
                                   np.asarray(prediction.label_ids),
                                   evaluated.spec.hyperparameters.multi_label_threshold)

    return compute


RECIPE = TaskRecipe(
    task=TASK, model_class=AutoModelForSequenceClassification, pipeline="text-classification",
    head=lambda names: labelled_head(names, "multi_label_classification"),
    models_hint=ENCODER_HINT, collator=padded_batches, metrics=metrics,
    class_report=lambda outputs, labels, names, spec: multi_label_report(
        outputs, labels, names, spec.hyperparameters.multi_label_threshold),
    lora=LoraHead(TaskType.SEQ_CLS, has_head=True))
