"""Failures of a training run, each with a stable code; the hints live in app.error_codes."""

from __future__ import annotations

from app.error_codes import hint_for


class TrainingError(Exception):
    code = "training_failed"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or hint_for(self.code)


class DatasetInvalid(TrainingError):
    code = "dataset_invalid"


class DatasetUnavailable(TrainingError):
    code = "dataset_unavailable"


class ModelNotFound(TrainingError):
    code = "model_not_found"


class ModelLoadFailed(TrainingError):
    code = "model_load_failed"


class UnsafeModelFormat(TrainingError):
    code = "unsafe_model_format"


class OutOfMemory(TrainingError):
    code = "out_of_memory"


class InvalidSpec(TrainingError):
    code = "invalid_spec"


class QuantizationUnavailable(TrainingError):
    code = "quantization_unavailable"


class DiskFull(TrainingError):
    code = "storage_full"
