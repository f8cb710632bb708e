"""LoRA: low-rank adapters on the backbone's linear layers, with peft.

The base weights stay fixed and the task head trains in full (peft's `modules_to_save`). The
job saves both the adapter (small, loaded onto the base model with `PeftModel`) and the
adapter merged into the weights (a plain model for `from_pretrained` and `pipeline`).

With `lora.quantization` (QLoRA) the base is loaded quantized (see quantization.py); the
merge then reloads it unquantized, since merging into 4-bit or 8-bit weights would round the
update away and leave a model that only bitsandbytes loads.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from peft import LoraConfig, PeftModel, TaskType, get_peft_model, prepare_model_for_kbit_training
from transformers import PreTrainedModel

from app.jobs.spec import JobSpec, Lora
from worker.training.errors import InvalidSpec
from worker.training.quantization import (
    check_quantization_runs,
    keep_training_layout,
    loaded_quantized,
)

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
    # Here, not at loading: the dry run's model on the meta device is checked too.
    check_quantization_runs(spec, model)
    if loaded_quantized(model):
        # The layers left in half precision go to fp32 for stable training, and the whole base
        # is frozen. Gradient checkpointing only where the spec asks (peft's default is on).
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=spec.compute.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
        keep_training_layout(model)
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
    adapter_folder = folder / ADAPTER_FOLDER
    model.save_pretrained(str(adapter_folder))
    base = model.get_base_model()
    if not loaded_quantized(base):
        return model.merge_and_unload()
    # The saved adapter onto the base reloaded unquantized, in its stored dtype: the same
    # adapter and head weights, the base's own weights instead of their 4-bit or 8-bit copies.
    config = copy.deepcopy(base.config)
    del config.quantization_config
    # The files that the job loaded, checked safe then, and on this disk since.
    unquantized = type(base).from_pretrained(
        base.name_or_path, config=config, dtype="auto", use_safetensors=True,
        trust_remote_code=False, local_files_only=True)
    return PeftModel.from_pretrained(unquantized, str(adapter_folder)).merge_and_unload()
