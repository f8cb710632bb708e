"""LoRA: low-rank adapters on the backbone's linear layers, with peft.

The base weights stay fixed and the task head trains in full (peft's `modules_to_save`). The
job saves both the adapter (small, loaded onto the base model with `PeftModel`) and the
adapter merged into the weights (a plain model for `from_pretrained` and `pipeline`).
"""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import PreTrainedModel

from app.jobs.spec import JobSpec, Lora
from worker.training.errors import InvalidSpec

ADAPTER_FOLDER = "adapter"
# peft knows the heads of these tasks and keeps them trainable; masked-lm has no task type,
# and its prediction head is among the linear layers LoRA adapts.
_TASK_TYPES = {"text-classification": TaskType.SEQ_CLS, "text-regression": TaskType.SEQ_CLS,
               "token-classification": TaskType.TOKEN_CLS, "seq2seq": TaskType.SEQ_2_SEQ_LM,
               "causal-lm": TaskType.CAUSAL_LM}
# Heads kept trainable by name instead: peft's QUESTION_ANS model drops token_type_ids on
# the way to the model, so BERT would train without knowing question from context.
_HEADS_BY_NAME = {"question-answering": ["qa_outputs"]}
# The heads at the top of a classifier or QA model, which train in full (`modules_to_save`):
# "every linear layer" must leave them and their inner layers out, or the two collide.
_HEADS = r"(classifier|score|qa_outputs)(\..+)?"
_TASKS_WITH_HEADS = ("text-classification", "text-regression", "token-classification",
                     "question-answering")


def with_lora(model: PreTrainedModel, lora: Lora, spec: JobSpec) -> PeftModel:
    every_linear_layer = lora.target_modules is None
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora.target_modules or "all-linear",
                        exclude_modules=(_HEADS if every_linear_layer
                                         and spec.task in _TASKS_WITH_HEADS else None),
                        task_type=_TASK_TYPES.get(spec.task),
                        modules_to_save=_HEADS_BY_NAME.get(spec.task))
    try:
        adapted = get_peft_model(model, config)
    except ValueError as exc:  # a target module name that the model does not have
        raise InvalidSpec(f"LoRA cannot adapt {spec.model}: {str(exc).splitlines()[0]}",
                          hint="Name linear layers the model has in lora.target_modules, or "
                               "leave it out to adapt all of them.") from exc
    # The saved adapter names its base as the user does, not by this worker's folder.
    adapted.peft_config[adapted.active_adapter].base_model_name_or_path = spec.model
    return adapted


def save_adapter_and_merged(model: PeftModel, folder: Path) -> PreTrainedModel:
    """Write the adapter into `folder/adapter`; answer the merged model, to save as usual."""
    model.save_pretrained(str(folder / ADAPTER_FOLDER))
    return model.merge_and_unload()
