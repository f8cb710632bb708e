"""text-regression: one number per text (or text pair), mean squared error."""

from __future__ import annotations

import numpy as np
from peft import TaskType
from transformers import AutoModelForSequenceClassification, EvalPrediction

from app.jobs.tasks.text_regression import TASK
from worker.training.lora import LoraHead
from worker.training.metrics import Metrics, model_outputs, regression_metrics
from worker.training.tasks import ENCODER_HINT, TaskRecipe, padded_batches


def compute_metrics(prediction: EvalPrediction) -> Metrics:
    return regression_metrics(model_outputs(prediction.predictions),
                              np.asarray(prediction.label_ids))


RECIPE = TaskRecipe(task=TASK, model_class=AutoModelForSequenceClassification,
                    pipeline="text-classification",
                    head=lambda _: {"num_labels": 1, "problem_type": "regression"},
                    models_hint=ENCODER_HINT, collator=padded_batches,
                    metrics=lambda _: compute_metrics,
                    lora=LoraHead(TaskType.SEQ_CLS, has_head=True))
