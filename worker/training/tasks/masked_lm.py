"""masked-lm: BERT-style domain adaptation. A share of the tokens is masked at random in every
batch and the model learns to predict them; it is scored by its loss and perplexity."""

from __future__ import annotations

import math
from typing import Any

from transformers import (
    AutoModelForMaskedLM,
    DataCollatorForLanguageModeling,
    PreTrainedTokenizerBase,
)

from app.jobs.spec import JobSpec
from worker.training.errors import InvalidSpec
from worker.training.metrics import Metrics
from worker.training.tasks import TaskRecipe


def collator(tokenizer: PreTrainedTokenizerBase, spec: JobSpec) -> DataCollatorForLanguageModeling:
    if tokenizer.mask_token is None:
        raise InvalidSpec(f"{spec.model} has no mask token, so it cannot learn masked-lm",
                          hint="Use a BERT-style model (BERT, RoBERTa, DistilBERT, ELECTRA); "
                               "GPT-style models learn with causal-lm.")
    return DataCollatorForLanguageModeling(
        tokenizer, mlm=True, mlm_probability=spec.hyperparameters.mlm_probability or 0.15)


def perplexity(metrics: dict[str, Any], prefix: str) -> Metrics:
    loss = metrics.get(f"{prefix}_loss")
    if not isinstance(loss, int | float):
        return {}
    # exp overflows past ~709: such a loss means the model has learnt nothing.
    return {f"{prefix}_perplexity": math.exp(loss) if loss < 700 else None}


RECIPE = TaskRecipe(model_class=AutoModelForMaskedLM, pipeline="fill-mask",
                    head=lambda _: {}, collator=collator, derived_metrics=perplexity)
