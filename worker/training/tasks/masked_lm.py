"""masked-lm: BERT-style domain adaptation. A share of the tokens is masked at random in every
batch and the model learns to predict them; it is scored by its loss and perplexity."""

from __future__ import annotations

from transformers import (
    AutoModelForMaskedLM,
    DataCollatorForLanguageModeling,
    PreTrainedTokenizerBase,
)

from app.jobs.spec import JobSpec
from app.jobs.tasks.masked_lm import TASK
from worker.training.errors import InvalidSpec
from worker.training.metrics import perplexity
from worker.training.tasks import TaskRecipe


def collator(tokenizer: PreTrainedTokenizerBase, spec: JobSpec) -> DataCollatorForLanguageModeling:
    if tokenizer.mask_token is None:
        raise InvalidSpec(f"{spec.model} has no mask token, so it cannot learn masked-lm",
                          hint=RECIPE.models_hint)
    return DataCollatorForLanguageModeling(
        tokenizer, mlm=True, mlm_probability=spec.hyperparameters.mlm_probability)


RECIPE = TaskRecipe(task=TASK, model_class=AutoModelForMaskedLM, pipeline="fill-mask",
                    head=lambda _: {}, collator=collator,
                    models_hint="Use a BERT-style model (BERT, RoBERTa, DistilBERT, ELECTRA); "
                                "GPT-style models learn with causal-lm.",
                    derived_metrics=perplexity)
