"""QLoRA: the base model's weights loaded quantized (bitsandbytes) and frozen under LoRA.

Only the linear layers inside the model's repeated blocks (attention and feed-forward, where
nearly all the weights are) are quantized. Embeddings, the pooler and the heads stay in full
precision: the task head is new and trains in full, and an output layer tied to the
embeddings cannot be quantized apart from them.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import torch
from torch import nn
from transformers import BitsAndBytesConfig
from transformers.pytorch_utils import Conv1D

from app.jobs.spec import JobSpec
from worker.training.errors import QuantizationUnavailable
from worker.training.hardware import Hardware, detect

# transformers' bitsandbytes integration skips the modules that this matches from the start of
# their name: every module whose name has no ".<index>." in it, i.e. everything outside the
# blocks of a ModuleList ("encoder.layer.0.", "model.layers.3.", "h.1."). Its default skip list
# would miss a new head with a bias: it names the last parameter ("classifier.bias"), not
# its module.
_OUTSIDE_THE_BLOCKS = r"(?!.*\.\d+\.).*"
_IN_A_BLOCK = re.compile(r"\.\d+\.")


def quantization_options(spec: JobSpec) -> dict[str, Any]:
    """The from_pretrained options that load the base model quantized as `spec.lora` asks;
    {} for an unquantized base.

    Raises QuantizationUnavailable where this worker cannot run the quantization.
    """
    if not is_quantized(spec):
        return {}
    check_quantization_runs(spec)
    if spec.lora.quantization == "8bit":
        config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=[_OUTSIDE_THE_BLOCKS])
    else:
        config = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype(detect()),
            llm_int8_skip_modules=[_OUTSIDE_THE_BLOCKS])
    return {"quantization_config": config}


def compute_dtype(hardware: Hardware) -> torch.dtype:
    """The dtype of the 4-bit layers' matmuls: bf16 where the hardware has it (QLoRA's
    choice), fp16 on older GPUs, fp32 on CPUs without native bf16, where bf16 4-bit matmuls
    are emulated: 34x slower than fp32 ones on this project's AVX2 runner (a 4-layer, 256-wide
    BERT, batch 16 x 64 tokens: 8.2 s against 0.24 s a step)."""
    if hardware.native_bf16:
        return torch.bfloat16
    return torch.float16 if hardware.device == "cuda" else torch.float32


def is_quantized(spec: JobSpec) -> bool:
    return spec.lora is not None and spec.lora.quantization != "none"


def loaded_quantized(model: nn.Module) -> bool:
    """Whether `model` was loaded with quantized weights (never so on the meta device)."""
    return getattr(model, "hf_quantizer", None) is not None


def keep_training_layout(model: nn.Module) -> None:
    """Keep 4-bit weights in the layout training reads.

    bitsandbytes (0.50) repacks a Linear4bit's weights for its AVX-512 bf16 inference kernel
    at the first forward in eval mode, and undoes it only when the weights are saved: the
    training after an evaluation then runs the inference kernel, which fails (an in-place
    add onto a tensor that needs grad), and layers narrower than a 64-weight block cannot be
    repacked at all. A job evaluates between training steps, so it never takes that path."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def check_quantization_runs(spec: JobSpec, model: nn.Module | None = None) -> None:
    """QuantizationUnavailable unless bitsandbytes can quantize for `spec` on this worker and,
    given the model (with its weights or on the meta device), the model has layers to
    quantize."""
    if not is_quantized(spec):
        return
    asked = f"lora.quantization is {spec.lora.quantization}"
    try:
        bitsandbytes = importlib.import_module("bitsandbytes")
    except ImportError as exc:
        raise QuantizationUnavailable(
            f"{asked}, but bitsandbytes is not installed on this worker ({exc})") from exc
    device = detect().device
    if device not in getattr(bitsandbytes, "supported_torch_devices", ()):
        raise QuantizationUnavailable(
            f"{asked}, but bitsandbytes {bitsandbytes.__version__} on this worker cannot run "
            f"on its {device}")
    if model is not None and not any(is_quantizable_layer(name, module)
                                     for name, module in model.named_modules()):
        raise QuantizationUnavailable(
            f"{asked}, but {spec.model} has no linear layers in repeated blocks for "
            "bitsandbytes to quantize",
            hint="Set lora.quantization to 'none' for this model; quantization is for "
                 "transformer models, whose blocks hold their linear layers.")


def parameter_count(parameter: nn.Parameter) -> int:
    """How many weights `parameter` holds: a 4-bit parameter stores two in each byte, packed
    into a column, and its quantization state keeps the real shape."""
    quant_state = getattr(parameter, "quant_state", None)
    return (int(torch.Size(quant_state.shape).numel()) if quant_state is not None
            else parameter.numel())


def is_quantizable_layer(name: str, module: nn.Module) -> bool:
    """Whether bitsandbytes quantizes the layer `name` (the rule of `_OUTSIDE_THE_BLOCKS`)."""
    # bitsandbytes' layers are nn.Linear subclasses: a loaded quantized model passes too.
    return isinstance(module, nn.Linear | Conv1D) and bool(_IN_A_BLOCK.search(name))
