"""LoRA: low-rank adapters on the backbone's linear layers, with peft.

The base weights stay fixed and the task head trains in full (peft's `modules_to_save`). The
job saves both the adapter (small, loaded onto the base model with `PeftModel`) and the
adapter merged into the weights (a plain model for `from_pretrained` and `pipeline`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import PreTrainedModel

from app.jobs.spec import JobSpec, Lora
from worker.training.errors import InvalidSpec

ADAPTER_FOLDER = "adapter"
# The heads at the top of a classifier or QA model, which train in full (`modules_to_save`):
# "every linear layer" must leave them and their inner layers out, or the two collide.
# DistilBERT's head has a pre_classifier layer, which peft's "classifier" (matched by the
# name's ending) also trains in full.
_HEADS = r"(pre_classifier|classifier|score|qa_outputs)(\..+)?"


@dataclass(frozen=True)
class LoraHead:
    """How LoRA treats a task's head; each task's recipe says."""

    # peft's task type: peft then knows the head and keeps it trainable. None: peft has
    # none (masked-lm's prediction head is among the linear layers LoRA adapts).
    peft_task_type: TaskType | None = None
    # Heads kept trainable by name instead, where peft's task type does not fit.
    trained_in_full: tuple[str, ...] = ()
    # The model has a head at its top that "every linear layer" must leave out.
    has_head: bool = False


def with_lora(model: PreTrainedModel, lora: Lora, spec: JobSpec, head: LoraHead) -> PeftModel:
    every_linear_layer = lora.target_modules is None
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora.target_modules or "all-linear",
                        exclude_modules=_HEADS if every_linear_layer and head.has_head else None,
                        task_type=head.peft_task_type,
                        modules_to_save=list(head.trained_in_full) or None)
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
