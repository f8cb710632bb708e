"""Examples of the OpenAI-compatible routes' OpenAPI document: a request body for each create,
and an answer for every response (the routes declare them; app/openapi_doc.py leaves declared
examples as they are). Each object is built with its own schema, so it is one it describes.
"""

from __future__ import annotations

import re
from typing import Any

from app.openai_compat.errors import OpenAIErrorBody, OpenAIErrorDetail, error_type
from app.openai_compat.schemas import (
    CheckpointMetrics,
    FileDeleted,
    FileObject,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
    HyperparametersOut,
    ListPage,
    MethodOut,
    SupervisedOut,
)

TRAIN = "ds_TRAIN"  # the id that uploading the training file answers, as in the native examples
JOB_ID = "job_9b2e7d4c1a6f4e8b9c3d5a7e1f2b4c6d"
MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
CREATED, FINISHED = 1768469400, 1768469987

# In app/openapi_examples.py's form, by (method, path): {name: (summary, body)}.
REQUEST_EXAMPLES: dict[tuple[str, str], dict[str, tuple[str, dict[str, Any]]]] = {
    ("post", "/v1/files"): {"chats": (
        "A chat JSON Lines file (examples/data/chat.jsonl) as the file part",
        {"file": "", "purpose": "fine-tune"})},
    ("post", "/v1/fine_tuning/jobs"): {"chats": (
        "Qwen2.5-0.5B-Instruct on an uploaded chat file, 3 epochs", {
            "model": MODEL, "training_file": TRAIN,
            "method": {"type": "supervised", "supervised": {"hyperparameters": {
                "n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": "auto"}}},
            "suffix": "support-bot", "metadata": {"team": "support"}})},
}

_HYPERPARAMETERS = HyperparametersOut(n_epochs=3, batch_size=8, learning_rate_multiplier=1.0)
_FILE = FileObject(id=TRAIN, bytes=18422, created_at=CREATED - 60, filename="chat.jsonl",
                   purpose="fine-tune")
_RESULT_FILE = FileObject(id=f"file-result-{JOB_ID}", bytes=1294, created_at=FINISHED,
                          filename="step_metrics.csv", purpose="fine-tune-results")
_JOB = FineTuningJob(
    id=JOB_ID, created_at=CREATED, finished_at=FINISHED, estimated_finish=None,
    status="succeeded", error=None, model=MODEL,
    fine_tuned_model=f"ft:{MODEL}:support-bot:{JOB_ID}",
    organization_id="proj_7c1e4b9a2f3d4e5a8b6c0d1e2f3a4b5c", training_file=TRAIN,
    validation_file=None, result_files=[_RESULT_FILE.id], trained_tokens=412_870,
    hyperparameters=_HYPERPARAMETERS,
    method=MethodOut(supervised=SupervisedOut(hyperparameters=_HYPERPARAMETERS)), seed=42,
    metadata={"team": "support"})
_QUEUED = _JOB.model_copy(update={"status": "queued", "finished_at": None,
                                  "fine_tuned_model": None, "result_files": [],
                                  "trained_tokens": None})
_EVENTS = [
    FineTuningJobEvent(id="ftevent-1214", created_at=FINISHED, level="info",
                       message="Job succeeded", type="message",
                       data={"kind": "succeeded", "metrics": {"train_loss": 1.0432}}),
    FineTuningJobEvent(id="ftevent-m9731", created_at=FINISHED - 40, level="info",
                       message="Step 150/150: training loss=0.9817", type="metrics",
                       data={"step": 150, "train_loss": 0.9817, "total_steps": 150}),
]
_CHECKPOINT = FineTuningJobCheckpoint(
    id="ftckpt-311", created_at=FINISHED - 30,
    fine_tuned_model_checkpoint=f"{_JOB.fine_tuned_model}:ckpt-step-150",
    fine_tuning_job_id=JOB_ID, step_number=150,
    metrics=CheckpointMetrics(step=150, train_loss=0.9817, valid_loss=1.1204))


def _dumped(value: Any) -> dict[str, Any]:
    return value.model_dump(mode="json")


ANSWERS: dict[str, dict[str, Any]] = {
    "file": _dumped(_FILE),
    "files": _dumped(ListPage[FileObject].of([_FILE], False)),
    "deleted": _dumped(FileDeleted(id=TRAIN, deleted=True)),
    "queued job": _dumped(_QUEUED),
    "cancelled job": _dumped(_QUEUED.model_copy(update={"status": "cancelled",
                                                        "finished_at": CREATED + 40,
                                                        "result_files": [_RESULT_FILE.id]})),
    "job": _dumped(_JOB),
    "jobs": _dumped(ListPage[FineTuningJob].of([_JOB], True)),
    "events": _dumped(ListPage[FineTuningJobEvent].of(_EVENTS, True)),
    "checkpoints": _dumped(ListPage[FineTuningJobCheckpoint].of([_CHECKPOINT], False)),
}


def _error(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return _dumped(OpenAIErrorBody(error=OpenAIErrorDetail(
        message=message, type=error_type(status), param=param, code=code)))


ERRORS: dict[int, dict[str, Any]] = {
    # Every route refuses a query parameter it does not take.
    400: _error(400, "unknown_field", "unknown query parameter 'stauts'", "stauts"),
    401: _error(401, "invalid_api_key", "the API key is not valid: check that it was copied "
                                        "whole"),
    403: _error(403, "loopback_only", "authentication is off on this server, so it only "
                                      "answers requests from its own machine"),
    409: _error(409, "job_already_finished", f"job {JOB_ID} has already finished (succeeded); "
                                             "nothing to cancel"),
    413: _error(413, "upload_too_large", "the file is larger than the limit of 2147483648 "
                                         "bytes (FT_MAX_UPLOAD_BYTES)", "file"),
    429: _error(429, "rate_limited", "more than 600 requests in a minute with this key; retry "
                                     "in 12 s"),
    503: _error(503, "database_unavailable", "the database cannot be reached right now; try "
                                             "again shortly"),
}
# What an operation refuses most often, where it is not ERRORS' answer, by (method, path).
OPERATION_ERRORS: dict[tuple[str, str], dict[int, dict[str, Any]]] = {
    ("post", "/v1/files"): {400: _error(
        400, "unsupported_purpose", "purpose 'batch' is not served here: this service keeps "
        "files for fine-tuning only; upload with purpose 'fine-tune'", "purpose")},
    ("post", "/v1/fine_tuning/jobs"): {400: _error(
        400, "unsupported_method", "preference tuning (dpo) is not available here: this "
        "service fine-tunes with the supervised method only, on chats or prompt/completion "
        "pairs; use method type 'supervised'", "method.type")},
    ("delete", "/v1/files/{file_id}"): {409: _error(
        409, "dataset_in_use", f"dataset {TRAIN} is used by active jobs: {JOB_ID}; cancel them "
        "or wait for them to finish")},
}
# A 404 names the object of the path's last parameter.
NOT_FOUND: dict[str, dict[str, Any]] = {
    "file_id": _error(404, "not_found", "no file with id 'file-abc123'", "file_id"),
    "job_id": _error(404, "not_found", f"no job with id {JOB_ID}", "job_id"),
}


def responses(method: str, path: str, answer: str | None,
              *errors: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of the operation at `path` (under /v1): its answer's example, and an
    example of each error it documents; a 404 where the path names an object."""
    own = OPERATION_ERRORS.get((method, f"/v1{path}"), {})
    documented: dict[int | str, dict[str, Any]] = {
        status: _error_response(own.get(status, ERRORS[status])) for status in errors}
    if answer is not None:
        documented[200] = {"content": {"application/json": {"example": ANSWERS[answer]}}}
    named = re.findall(r"\{(\w+)\}", path)
    if named:
        documented[404] = _error_response(NOT_FOUND[named[-1]])
    return documented


def common_errors() -> dict[int | str, dict[str, Any]]:
    """What every operation may answer: a refused query, no key, the rate limit, an outage;
    and `default`, any other failure, in the same envelope (never FastAPI's 422 body: these
    routes answer 400 for what the native API refuses with 422)."""
    return {**{status: _error_response(ERRORS[status]) for status in (400, 401, 403, 429, 503)},
            "default": _error_response(_error(500, "internal_error", "the service failed on "
                                              "this request; the error is in its log"))}


def _error_response(example: dict[str, Any]) -> dict[str, Any]:
    return {"model": OpenAIErrorBody, "content": {"application/json": {"example": example}}}
