"""OpenAI fine-tuning jobs as native causal-lm jobs: the request becomes a JobSpec submitted
through the native path (same checks, quota and queue), and a native job reads back as
OpenAI's `fine_tuning.job`.

What a spec has no field for (the metadata, the hyperparameters as requested, "auto"
included) is recorded in the job's timeline, in one `openai_request` event written in the
submit's transaction. The suffix is the job's `name`.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import ValidationError
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from app.auth import Caller
from app.config import Settings
from app.errors import InvalidRequest
from app.jobs import lifecycle
from app.jobs import service as jobs
from app.jobs.dataset_fields import fitting_fields, project_dataset
from app.jobs.spec import Hyperparameters, JobSpec
from app.models import Dataset, Job, JobEvent, JobStatus
from app.openai_compat.errors import UnsupportedByService, openai_param
from app.openai_compat.files import result_file_id
from app.openai_compat.schemas import (
    SUFFIX_PATTERN,
    FineTuningJob,
    FineTuningJobCreate,
    HyperparametersIn,
    HyperparametersOut,
    JobErrorOut,
    MethodOut,
    SupervisedOut,
)
from app.pagination import paginate

# learning_rate_multiplier multiplies the native default learning rate.
BASE_LEARNING_RATE: float = Hyperparameters.model_fields["learning_rate"].default
DEFAULT_BATCH_SIZE: int = Hyperparameters.model_fields["batch_size"].default
REQUEST_EVENT = "openai_request"
TASK = "causal-lm"

_STATUSES = {JobStatus.QUEUED: "queued", JobStatus.RUNNING: "running",
             # Still training until the worker stops it; OpenAI has no such state.
             JobStatus.CANCELLING: "running", JobStatus.SUCCEEDED: "succeeded",
             JobStatus.FAILED: "failed", JobStatus.CANCELLED: "cancelled"}
# OpenAI's hosted models: nothing here can fine-tune them.
_HOSTED_MODEL = re.compile(r"^(gpt-|chatgpt-|o\d|babbage-|davinci-|text-)")
_DATA_ERRORS = ("dataset_invalid", "dataset_unavailable")
_METHODS_ELSEWHERE = {
    "dpo": "preference tuning (dpo) is not available here: this service fine-tunes with "
           "the supervised method only, on chats or prompt/completion pairs",
    "reinforcement": "reinforcement fine-tuning is not available here: this service "
                     "fine-tunes with the supervised method only, on chats or "
                     "prompt/completion pairs",
}


def create(session: Session, caller: Caller, request: FineTuningJobCreate,
           enqueue: lifecycle.Enqueue, settings: Settings) -> Job:
    """Submit the request as a native causal-lm job of the caller's project."""
    asked = _requested_hyperparameters(request)
    if request.integrations:
        raise UnsupportedByService("integrations (Weights & Biases) are not available here; "
                                   "follow the job's metrics with list_events or its result "
                                   "file", code="unsupported_parameter", param="integrations")
    _check_model(request.model, settings)
    train = _chat_or_pairs(session, caller, request.training_file, "training_file")
    if request.validation_file is not None:
        validation = _chat_or_pairs(session, caller, request.validation_file, "validation_file")
        if _fields(validation) != _fields(train):
            raise InvalidRequest(
                f"validation_file {validation.id} is in another layout ({validation.layout}) "
                f"than training_file {train.id} ({train.layout}): give both as chats or both "
                "as prompt/completion pairs", code="unsupported_file_layout",
                param="validation_file")
    resolved = _resolved(asked, train.num_rows)
    steps_per_epoch = math.ceil(train.num_rows / resolved.batch_size)
    dataset = {"train": train.id}
    if request.validation_file is not None:
        dataset["validation"] = request.validation_file
    spec = _spec({
        "task": TASK, "model": request.model, "name": request.suffix, "dataset": dataset,
        "hyperparameters": {
            "epochs": resolved.n_epochs, "batch_size": resolved.batch_size,
            "learning_rate": resolved.learning_rate_multiplier * BASE_LEARNING_RATE,
            **({"seed": request.seed} if request.seed is not None else {})},
        # A checkpoint about every epoch, as OpenAI keeps; a point about every 1% of the run.
        "checkpoint_steps": steps_per_epoch,
        "logging_steps": min(10, max(1, steps_per_epoch * int(resolved.n_epochs) // 100)),
    })
    job = jobs.create(session, caller, spec, enqueue, settings)
    lifecycle.add_event(session, job.id, REQUEST_EVENT, _request_note(asked, resolved), {
        "suffix": request.suffix, "metadata": request.metadata, "method": "supervised",
        "requested": asked.model_dump(), "resolved": resolved.model_dump()})
    session.flush()
    return job


def _requested_hyperparameters(request: FineTuningJobCreate) -> HyperparametersIn:
    method = request.method
    if method is not None and method.type != "supervised":
        reason = _METHODS_ELSEWHERE.get(method.type, f"method {method.type!r} is unknown")
        raise UnsupportedByService(f"{reason}; use method type 'supervised'",
                                   code="unsupported_method", param="method.type")
    in_method = method.supervised.hyperparameters if method and method.supervised else None
    if in_method is not None and request.hyperparameters is not None:
        raise InvalidRequest("give the hyperparameters once: in method.supervised (preferred) "
                             "or in the deprecated top-level hyperparameters",
                             param="hyperparameters")
    return in_method or request.hyperparameters or HyperparametersIn()


def _check_model(model: str, settings: Settings) -> None:
    if model.startswith("ft:"):
        raise UnsupportedByService(
            f"{model} is the name of a fine-tuned model; continuing from one is not available "
            "here: download a model fine-tuned here (GET /v1/jobs/{job_id}/model) and add it "
            "to the model catalog",
            code="unsupported_model", param="model")
    if _HOSTED_MODEL.match(model) and not _in_catalog(model, settings):
        raise UnsupportedByService(
            f"{model} is an OpenAI-hosted model, which this service cannot fine-tune; name an "
            "open model of its catalog or the Hugging Face Hub (e.g. 'Qwen/Qwen2.5-0.5B')",
            code="unsupported_model", param="model")


def _in_catalog(model: str, settings: Settings) -> bool:
    try:
        return ".." not in model and (settings.models_dir / model / "config.json").is_file()
    except (OSError, ValueError):  # not a path at all (a NUL), or one too long
        return False


def _chat_or_pairs(session: Session, caller: Caller, file_id: str, param: str) -> Dataset:
    try:
        dataset = project_dataset(session, caller, file_id, param)
    except InvalidRequest:
        raise InvalidRequest(f"no fine-tune file with id {file_id} in this project; upload one "
                             "with purpose 'fine-tune'", code="file_not_found",
                             param=param) from None
    if not _fields(dataset):
        raise InvalidRequest(
            f"{param} {dataset.id} was read as layout '{dataset.layout}'; fine-tuning here "
            "needs chat JSON Lines ({\"messages\": [{\"role\": \"user\", ...}, {\"role\": "
            "\"assistant\", ...}]}) or prompt/completion JSON Lines ({\"prompt\": ..., "
            "\"completion\": ...}); other data trains through POST /v1/jobs",
            code="unsupported_file_layout", param=param)
    return dataset


def _fields(dataset: Dataset) -> dict[str, object]:
    """The causal-lm fields of a chat or prompt/completion dataset; empty for plain text."""
    fields = fitting_fields(dataset).get(TASK, {})
    return fields if "messages_column" in fields or "prompt_column" in fields else {}


def _resolved(asked: HyperparametersIn, rows: int) -> HyperparametersOut:
    return HyperparametersOut(
        n_epochs=_auto_epochs(rows) if asked.n_epochs == "auto" else asked.n_epochs,
        batch_size=min(DEFAULT_BATCH_SIZE, rows) if asked.batch_size == "auto"
        else asked.batch_size,
        learning_rate_multiplier=1.0 if asked.learning_rate_multiplier == "auto"
        else asked.learning_rate_multiplier)


def _auto_epochs(rows: int) -> int:
    """OpenAI's published heuristic: 3 epochs, more for small files, fewer for huge ones."""
    if rows * 3 < 100:
        return min(25, 100 // rows)
    if rows * 3 > 25_000:
        return max(1, 25_000 // rows)
    return 3


def _spec(fields: dict[str, Any]) -> JobSpec:
    try:
        return JobSpec.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        cause = error.get("ctx", {}).get("error")
        param = getattr(cause, "param", None) or ".".join(map(str, error["loc"])) or None
        raise InvalidRequest(f"{openai_param(param)}: {cause or error['msg']}",
                             param=param) from None


def _request_note(asked: HyperparametersIn, resolved: HyperparametersOut) -> str:
    def shown(name: str) -> str:
        value = getattr(resolved, name)
        return f"{name} {value:g}" + (" (auto)" if getattr(asked, name) == "auto" else "")

    rate = resolved.learning_rate_multiplier * BASE_LEARNING_RATE
    return ("Submitted through the OpenAI-compatible API: "
            f"{', '.join(shown(name) for name in HyperparametersOut.model_fields)} "
            f"(learning rate {rate:g})")


def list_page(session: Session, caller: Caller, limit: int, after: str | None,
              metadata: dict[str, str]) -> tuple[list[Job], bool]:
    statement = select(Job)
    for key, value in metadata.items():
        statement = statement.where(exists().where(
            JobEvent.job_id == Job.id, JobEvent.kind == REQUEST_EVENT,
            JobEvent.data["metadata"][key].as_string() == value))
    return paginate(session, caller, statement, Job, limit, after)


def openai_jobs(session: Session, jobs_: list[Job]) -> list[FineTuningJob]:
    asked = {job_id: data for job_id, data in session.execute(
        select(JobEvent.job_id, JobEvent.data).where(
            JobEvent.job_id.in_([job.id for job in jobs_]), JobEvent.kind == REQUEST_EVENT))}
    return [openai_job(job, asked.get(job.id, {})) for job in jobs_]


def openai_job(job: Job, request: dict[str, Any]) -> FineTuningJob:
    spec = JobSpec.from_stored(job.spec, job.spec_version)
    hyper = spec.hyperparameters
    hyperparameters = HyperparametersOut(
        n_epochs=int(hyper.epochs) if float(hyper.epochs).is_integer() else hyper.epochs,
        batch_size=hyper.batch_size,
        learning_rate_multiplier=float(f"{hyper.learning_rate / BASE_LEARNING_RATE:.10g}"))
    finished = job.status in lifecycle.TERMINAL
    final = job.metrics.get("final", {}) if job.status == JobStatus.SUCCEEDED else {}
    tokens = final.get("num_input_tokens_seen")
    return FineTuningJob(
        id=job.id, created_at=_unix(job.created_at),
        finished_at=_unix(job.finished_at) if job.finished_at else None,
        estimated_finish=_estimated_finish(job), status=_STATUSES[job.status],
        error=_error(job), model=spec.model,
        fine_tuned_model=fine_tuned_model(job, spec) if job.status == JobStatus.SUCCEEDED
        else None,
        organization_id=job.project_id, training_file=_training_file(spec),
        validation_file=spec.dataset.validation,
        result_files=[result_file_id(job.id)] if finished else [],
        trained_tokens=int(tokens) if isinstance(tokens, int | float) else None,
        hyperparameters=hyperparameters,
        method=MethodOut(supervised=SupervisedOut(hyperparameters=hyperparameters)),
        seed=hyper.seed, metadata=request.get("metadata"))


def fine_tuned_model(job: Job, spec: JobSpec) -> str:
    """`ft:<base>:<suffix>:<job id>`: names the model; its files are at /v1/jobs/{id}/model."""
    suffix = job.name if job.name and re.fullmatch(SUFFIX_PATTERN, job.name) else ""
    return f"ft:{spec.model}:{suffix}:{job.id}"


def _training_file(spec: JobSpec) -> str:
    if spec.dataset.train is not None:
        return spec.dataset.train
    return f"hub:{spec.dataset.hub.hub}" if spec.dataset.hub is not None else ""


def _error(job: Job) -> JobErrorOut | None:
    if job.status != JobStatus.FAILED or not job.error_code:
        return None
    message = job.error_message or job.error_code
    return JobErrorOut(code=job.error_code,
                       message=f"{message} {job.error_hint}" if job.error_hint else message,
                       param="training_file" if job.error_code in _DATA_ERRORS else None)


def _estimated_finish(job: Job) -> int | None:
    if job.status not in lifecycle.LEASED or job.eta_seconds is None:
        return None
    return _unix(job.updated_at) + round(job.eta_seconds)


def _unix(moment: Any) -> int:
    return int(moment.timestamp())
