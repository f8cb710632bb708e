"""QLoRA: the base model's weights loaded quantized (bitsandbytes) and frozen under LoRA."""

from __future__ import annotations

from typing import Any

from app.jobs.spec import JobSpec


def quantization_options(spec: JobSpec) -> dict[str, Any]:
    """The from_pretrained options that load the base model quantized as `spec.lora` asks;
    {} for an unquantized base."""
    if spec.lora is None or spec.lora.quantization == "none":
        return {}
    raise NotImplementedError("quantized bases are being built")  # filled in by the QLoRA work
