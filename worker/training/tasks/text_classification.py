"""text-classification: one label per text (or text pair), cross-entropy over the classes."""

from __future__ import annotations

import numpy as np
from peft import TaskType
from transformers import AutoModelForSequenceClassification, EvalPrediction

from app.jobs.tasks.text_classification import TASK
from worker.training.lora import LoraHead
from worker.training.metrics import (
    Metrics,
    classification_metrics,
    model_outputs,
    per_class_report,
)
from worker.training.tasks import ENCODER_HINT, TaskRecipe, labelled_head, padded_batches


def compute_metrics(prediction: EvalPrediction) -> Metrics:
    return classification_metrics(model_outputs(prediction.predictions),
                                  np.asarray(prediction.label_ids))


RECIPE = TaskRecipe(task=TASK, model_class=AutoModelForSequenceClassification,
                    pipeline="text-classification",
                    head=lambda names: labelled_head(names, "single_label_classification"),
                    models_hint=ENCODER_HINT, collator=padded_batches,
                    metrics=lambda _: compute_metrics,
                    class_report=lambda outputs, labels, names, _: per_class_report(
                        outputs, labels, names),
                    lora=LoraHead(TaskType.SEQ_CLS, has_head=True))
