"""The examples of the OpenAPI document: a working request body for each task and an answer
for every response. app/openapi_doc.py puts them into the document.

The job specs are the recipes of examples/specs/, with placeholder dataset ids: `ds_TRAIN` and
`ds_DEV` stand for the ids that uploading the data answers (POST /v1/datasets). The answers are
taken from real runs (the SST-2 recipe, a dry run of it), trimmed; the job objects' `spec` is
each example's spec resolved by JobSpec itself, so it is what the API would store.
"""

from __future__ import annotations

from typing import Any

from app.jobs.spec import JobSpec

TRAIN, DEV = "ds_TRAIN", "ds_DEV"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"

# One named example per task, in the order of the tasks; the first is the one imported as the
# request body. Each: (summary, spec).
JOB_SPECS: dict[str, tuple[str, dict[str, Any]]] = {
    "text-classification": ("SST-2 sentiment: the classic recipe on the packaged MiniLM", {
        "task": "text-classification", "model": MINILM,
        "dataset": {"train": TRAIN, "validation": DEV, "text_column": "sentence",
                    "label_column": "label"},
        "hyperparameters": {"epochs": 1, "batch_size": 32, "learning_rate": 5e-5,
                            "max_seq_length": 64, "warmup_ratio": 0.1},
        "evaluation": {"strategy": "steps", "steps": 100},
        "logging_steps": 25}),
    "text-regression": ("A score per review (text-regression)", {
        "task": "text-regression", "model": MINILM, "name": "review-score",
        "dataset": {"train": TRAIN, "validation_split": 0.1, "text_column": "text",
                    "label_column": "score"},
        "hyperparameters": {"epochs": 3, "batch_size": 16, "learning_rate": 3e-5,
                            "warmup_ratio": 0.06, "weight_decay": 0.01}}),
    "token-classification": ("Named entities from CoNLL files (token-classification)", {
        "task": "token-classification", "model": MINILM,
        "dataset": {"train": TRAIN, "validation": DEV, "tokens_column": "tokens",
                    "tags_column": "tags"},
        "hyperparameters": {"epochs": 3, "batch_size": 16, "learning_rate": 5e-5}}),
    "question-answering": ("SQuAD: the answer's span in a context (question-answering)", {
        "task": "question-answering", "model": MINILM,
        "dataset": {"train": TRAIN, "validation": DEV},
        "hyperparameters": {"epochs": 2, "batch_size": 16, "learning_rate": 3e-5,
                            "max_seq_length": 384, "doc_stride": 128}}),
    "seq2seq": ("Summaries with T5 (seq2seq)", {
        "task": "seq2seq", "model": "google-t5/t5-small",
        "dataset": {"train": TRAIN, "validation_split": 0.1, "source_column": "source",
                    "target_column": "target", "source_prefix": "summarize: "},
        "hyperparameters": {"epochs": 3, "batch_size": 16, "learning_rate": 3e-4,
                            "max_seq_length": 512, "max_target_length": 64, "num_beams": 4}}),
    "masked-lm": ("Domain adaptation on plain text (masked-lm)", {
        "task": "masked-lm", "model": MINILM,
        "dataset": {"train": TRAIN, "validation_split": 0.1, "text_column": "text"},
        "hyperparameters": {"epochs": 3, "batch_size": 16, "learning_rate": 5e-5,
                            "mlm_probability": 0.15},
        "early_stopping": {"patience": 2}}),
    "causal-lm": ("Chats with LoRA on Qwen2.5-0.5B-Instruct (causal-lm)", {
        "task": "causal-lm", "model": "Qwen/Qwen2.5-0.5B-Instruct",
        "dataset": {"train": TRAIN, "validation_split": 0.1, "messages_column": "messages"},
        "hyperparameters": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-4,
                            "max_seq_length": 1024},
        "lora": {"r": 16, "alpha": 32}}),
}



def request_examples() -> dict[tuple[str, str], dict[str, tuple[str, dict[str, Any]]]]:
    """The named request bodies of each operation that takes one, by (method, path); the
    first is the one a client starts from."""
    return {
        ("post", "/v1/jobs"): JOB_SPECS,
        ("post", "/v1/jobs/validate"): JOB_SPECS,
        # The form's file part, and a name; its format and layout are read from the file.
        ("post", "/v1/datasets"): {"sst2-train": (
            "SST-2's training file (examples/sst2/train.tsv) as the file part",
            {"file": "", "name": "sst2-train"})},
        ("post", "/v1/keys"): {"ci": ("A key for a team's CI (with an admin key)",
                                      {"project": "nlp-team", "name": "ci"})},
    }


PROJECT = "proj_7c1e4b9a2f3d4e5a8b6c0d1e2f3a4b5c"
DATASET_ID = "ds_5f0c3a9e8b2d4e71a6c4f1d2e3b4a5c6"
JOB_ID = "job_9b2e7d4c1a6f4e8b9c3d5a7e1f2b4c6d"
DRY_RUN_ID = "dry_5db9aa936aab438387342475ef040bd3"
KEY_PREFIX = "ftk_Ab12Cd34"
CREATED, STARTED, FINISHED = "2026-01-15T09:30:00Z", "2026-01-15T09:30:02Z", "2026-01-15T09:39:47Z"


def resolved_spec(task: str) -> dict[str, Any]:
    """The spec the API stores for `task`'s example: every default filled in."""
    return JobSpec.model_validate(JOB_SPECS[task][1]).resolved().model_dump(mode="json")


def _dataset() -> dict[str, Any]:
    return {
        "id": DATASET_ID, "project_id": PROJECT, "name": "sst2-train", "format": "tsv",
        "source_format": "tsv", "layout": "tabular", "layout_details": {},
        "fits": {"text-classification": {"text_column": "sentence"},
                 "text-regression": {"text_column": "sentence"},
                 "masked-lm": {"text_column": "sentence"},
                 "causal-lm": {"text_column": "sentence"}},
        "filename": "train.tsv", "size_bytes": 450715,
        "sha256": "756d4cf66b04a2acf53c6a8f127802db2fe7bdbe0a85c086bd0d05b4b4c546bf",
        "num_rows": 8000,
        "columns": [{"name": "label", "type": "integer"}, {"name": "sentence", "type": "string"}],
        "created_at": CREATED}


_COMPUTE = {"device": "cpu", "device_name": "AMD EPYC", "precision": "fp32", "attention": "sdpa",
            "gradient_checkpointing": False, "compile": False, "length_grouping": True,
            "packing": False, "optimizer": "adamw_torch_fused", "autocast": False}


def job(task: str, status: str = "queued") -> dict[str, Any]:
    """The job object of `task`'s example: just submitted (`queued`), or after the SST-2 run
    (`succeeded`), or cancelled while queued (`cancelled`)."""
    succeeded = status == "succeeded"
    return {
        "id": JOB_ID, "project_id": PROJECT, "submitted_by": KEY_PREFIX,
        "name": JOB_SPECS[task][1].get("name"), "status": status, "spec": resolved_spec(task),
        "progress": {"step": 250 if succeeded else 0, "total_steps": 250 if succeeded else None,
                     "epoch": 1.0 if succeeded else None,
                     "percent": 100.0 if succeeded else 0.0,
                     "eta_seconds": 0.0 if succeeded else None},
        "metrics": _SST2_METRICS if succeeded else {},
        "error": None,
        "attempts": [{
            "number": 1, "worker": "worker-1", "started_at": STARTED, "ended_at": FINISHED,
            "outcome": "succeeded", "error_code": None, "resumed_from_step": None,
            "last_step": 250,
            "settings": {"batch_size": 32, "gradient_accumulation_steps": 1,
                         "gradient_checkpointing": False, "compute": _COMPUTE}}
        ] if succeeded else [],
        "waiting_for": None,
        "created_at": CREATED, "started_at": STARTED if succeeded else None,
        "finished_at": None if status == "queued" else FINISHED}


_SST2_EVAL = {"eval_loss": 0.3871, "eval_accuracy": 0.836, "eval_precision": 0.8362,
              "eval_recall": 0.8357, "eval_f1": 0.8358}
_SST2_METRICS = {
    "train": {"loss": 0.3412, "learning_rate": 2.2e-07, "samples_per_second": 15.2,
              "tokens_per_second": 205.6, "peak_memory_bytes": 1203765248},
    "eval": _SST2_EVAL,
    "final": {"train_runtime": 526.3, "train_loss": 0.4127, "epoch": 1.0, "device": "cpu",
              "precision": "fp32", **_SST2_EVAL,
              "validation_per_class": {
                  "0": {"precision": 0.8402, "recall": 0.8224, "f1": 0.8312, "support": 428},
                  "1": {"precision": 0.8322, "recall": 0.8491, "f1": 0.8406, "support": 444}}}}

_LOADED = (f"loaded {MINILM} (BertForSequenceClassification): 22,713,986 of 22,713,986 "
           "parameters trainable (100.00%)")
_EVENTS = [
    ("queued", "Job queued", {"model": MINILM, "task": "text-classification"}),
    ("started", "Attempt 1 started on worker-1", {"attempt": 1, "worker": "worker-1"}),
    ("dataset_loaded", "8000 training, 872 validation and 0 test rows; 0 unusable rows dropped",
     {"train_rows": 8000, "validation_rows": 872, "test_rows": 0, "dropped_rows": {"train": 0},
      "num_labels": 2, "labels": ["0", "1"]}),
    ("model_loaded", _LOADED,
     {"model": MINILM, "architecture": "BertForSequenceClassification", "lora": False,
      "total_parameters": 22713986, "trainable_parameters": 22713986, "trainable_share": 1.0}),
    ("evaluation", "Evaluation at step 100",
     {"step": 100, "epoch": 0.4, "metrics": {"eval_loss": 0.4529, "eval_accuracy": 0.7993}}),
    ("succeeded", "Job succeeded", {"metrics": _SST2_EVAL}),
]

_DRY_RUN_REPORT = {
    "valid": True, "errors": [], "warnings": [],
    "dataset": {
        "files": {"train": {"rows_read": 8000, "rows_dropped": 0, "rows_usable": 8000},
                  "validation": {"rows_read": 872, "rows_dropped": 0, "rows_usable": 872}},
        "splits": {"train": 8000, "validation": 872}, "label_names": ["0", "1"],
        "label_distribution": {"train": {"0": 3572, "1": 4428},
                               "validation": {"0": 428, "1": 444}},
        "columns": {"needed": {"text_column": "sentence", "label_column": "label"},
                    "found": {"train": ["label", "sentence"],
                              "validation": ["label", "sentence"]}}},
    "tokens": {"sample_rows": 1000, "max_seq_length": 64,
               "rows": {"mean": 13.55, "p95": 35.0, "max": 62}, "truncated_share": 0.0,
               "features": {"mean": 13.52, "p95": 34.0, "max": 63},
               "tokens_per_epoch": 108150},
    "steps": {"train_features": 8000, "batches_per_epoch": 250, "steps_per_epoch": 250,
              "total_steps": 250, "epochs": 1.0, "warmup_steps": 25,
              "effective_batch_size": 32},
    "parameters": {"total": 22713986, "trainable": 22713986, "trainable_share": 1.0,
                   "architecture": "BertForSequenceClassification", "lora": False},
    "memory": {"weights_bytes": 90855944, "autocast_copies_bytes": 0,
               "gradients_bytes": 90855944, "optimizer_bytes": 181711888,
               "activations_bytes": 407296512, "total_bytes": 770720288, "batch_size": 32,
               "sequence_length": 63, "optimizer": "adamw", "precision": "fp32",
               "quantization": None, "gradient_checkpointing": False, "estimate": True},
    "time": {"device": "cpu", "device_name": "AMD EPYC", "precision": "fp32",
             "flops_per_epoch": 7304391917568, "tokens_per_epoch": 108150,
             "batched_tokens_per_epoch": 113088, "peak_flops_per_second": 45995832520.72,
             "utilization_assumed": 0.3, "estimate": True, "seconds_per_epoch": 529.352,
             "seconds_total": 529.352}}


def dry_run(done: bool) -> dict[str, Any]:
    """The SST-2 recipe's dry run: as the worker reported it, or still waiting for one."""
    report = {**_DRY_RUN_REPORT, "spec": resolved_spec("text-classification")} if done else None
    return {"id": DRY_RUN_ID, "object": "dry_run", "status": "done" if done else "pending",
            "url": f"/v1/dry-runs/{DRY_RUN_ID}", "report": report, "created_at": CREATED,
            "updated_at": "2026-01-15T09:30:40Z" if done else CREATED}


def _key(revoked: bool = False) -> dict[str, Any]:
    return {"prefix": KEY_PREFIX, "project": "nlp-team", "admin": False, "name": "ci",
            "created_at": CREATED, "last_used_at": FINISHED if revoked else None,
            "revoked_at": "2026-01-16T08:00:00Z" if revoked else None}


def _artifacts() -> list[dict[str, Any]]:
    files = (
        ("README.md", 2134, "65769377cfe486ef7a45359ca79f8aba573f076608d371e2dbcf35257d489dc7"),
        ("config.json", 912, "8f1f5d45168ef530c6f255e1023f22f5a99d76da560fe586dbeeb172081f743a"),
        ("metrics.json", 1184, "44d2195ba9b140084027be7d2393c0934ab8da4b2701b9aa3b5379bfb99e947c"),
        ("model.safetensors", 90868376,
         "325f475a66b3e51017ab58545d720f56c6ae69ba55d56359c6ba3950d02bbe57"),
        ("tokenizer.json", 711649,
         "fe2409e81dc170f438db6a5f998fb18854cb9ab90d4882d3d13b772f3548721e"))
    return [{"path": path, "size_bytes": size, "sha256": sha} for path, size, sha in files]


def success_examples() -> dict[str, Any]:
    """An answer for each response model, by its name in the document's components."""
    return {
        "DatasetOut": _dataset(),
        "Page_DatasetOut_": {"data": [_dataset()], "has_more": False},
        "DatasetPreview": {
            "dataset_id": DATASET_ID, "columns": _dataset()["columns"],
            "rows": [{"label": 1, "sentence": "very best movies"},
                     {"label": 0, "sentence": ", lacks fellowship 's heart"},
                     {"label": 1, "sentence": "a film of epic scale"}]},
        "JobOut": job("text-classification", "succeeded"),
        "Page_JobOut_": {"data": [job("text-classification", "succeeded")], "has_more": False},
        "EventPage": {"has_more": False, "data": [
            {"id": number, "kind": kind, "message": message, "data": data,
             "created_at": CREATED if number == 1 else STARTED}
            for number, (kind, message, data) in enumerate(_EVENTS, start=1)]},
        "MetricsOut": {"job_id": JOB_ID, "series": {
            "loss": [{"step": step, "epoch": step / 250, "value": value}
                     for step, value in ((25, 0.6874), (125, 0.4392), (250, 0.3412))],
            "eval_accuracy": [{"step": 100, "epoch": 0.4, "value": 0.7993},
                              {"step": 200, "epoch": 0.8, "value": 0.8291},
                              {"step": 250, "epoch": 1.0, "value": 0.836}]}},
        "DryRunOut": dry_run(done=True),
        "ArtifactList": {"data": _artifacts(), "has_more": False},
        "CreatedKey": {**_key(), "key": KEY_PREFIX + "Qx7Lm2Np9Rt4Vw6Yz8Bc1Df3Gh5Jk0Ps2Uv4Xa6C"},
        "KeyList": {"data": [_key()], "has_more": False},
        "KeyOut": _key(revoked=True),
        "Health": {"status": "ok"},
        "Page_WorkerOut_": {"data": [{
            "id": "gpu-node-1:4242", "object": "worker", "host": "gpu-node-1", "pid": 4242,
            "gpu_type": "a100-80gb", "gpus": 2, "gpu_memory_bytes": 85899345920,
            "queues": ["jobs.a100-80gb.1", "jobs.any.1", "jobs.a100-80gb.2", "jobs.any.2"],
            "status": "busy", "job_id": JOB_ID, "started_at": CREATED,
            "heartbeat_at": STARTED}], "has_more": False},
    }


def error_body(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """The API's error body (app/errors.py): `param` only where one field is at fault."""
    return {"error": {"code": code, "message": message,
                      **({"param": param} if param else {})}}


# The error every status answers most often, where an operation names none of its own.
ERRORS: dict[int, dict[str, Any]] = {
    400: error_body("invalid_json", "the request body is not valid JSON: Expecting ',' "
                                "delimiter: line 3 column 5 (char 41)"),
    401: error_body("unauthorized", "this request needs an API key: send the header "
                                "'Authorization: Bearer <key>'"),
    403: error_body("loopback_only", "authentication is off on this server, so it only answers "
                                 "requests from its own machine"),
    409: error_body("conflict", "the request conflicts with a change made at the same moment (for "
                            "example, its dataset was just deleted); read the objects again "
                            "and retry"),
    413: error_body("body_too_large", "the request body is larger than the limit of 1048576 bytes "
                                  "(FT_MAX_JSON_BYTES)"),
    416: error_body("range_not_satisfiable", "the range bytes=90868376- is outside the file's "
                                         "90868376 bytes"),
    # Every /v1 route refuses a query parameter it does not take.
    422: error_body("unknown_field", "unknown query parameter 'stauts'", "stauts"),
    429: error_body("rate_limited", "more than 600 requests in a minute with this key; retry in "
                                "12 s"),
    503: error_body("database_unavailable", "the database cannot be reached right now; try again "
                                        "shortly"),
    507: error_body("storage_full", "the service's disk (FT_STORAGE_DIR) is full: 4,096 of "
                                "8,589,934,592 bytes free while receiving the upload; nothing "
                                "was kept. Send it again once the operator has freed space in "
                                "FT_STORAGE_DIR or given it a larger disk"),
}

# A 404 names the object of the path's last parameter.
NOT_FOUND: dict[str, dict[str, Any]] = {
    "dataset_id": error_body("not_found", f"no dataset with id {DATASET_ID}", "dataset_id"),
    "job_id": error_body("not_found", f"no job with id {JOB_ID}", "job_id"),
    "dry_run_id": error_body("not_found", f"no dry run with id {DRY_RUN_ID}", "dry_run_id"),
    "prefix": error_body("not_found", f"no API key with prefix {KEY_PREFIX}", "prefix"),
    "path": error_body("not_found", f"job {JOB_ID} has no artifact 'pytorch_model.bin'", "path"),
}

_ADMIN_REQUIRED = {403: error_body("admin_required", "only an admin key can manage API keys")}
_IDEMPOTENCY_IN_USE = error_body("idempotency_key_in_use", "another request with this "
                             "Idempotency-Key is in progress; retry it in a moment",
                             "Idempotency-Key")
_DOWNLOAD_ERRORS = {
    400: error_body("invalid_range", "malformed Range header: 'bytes=abc'", "Range"),
    409: error_body("model_not_ready", f"job {JOB_ID} has no model yet (status running); the "
                                   "model can be downloaded once the job has succeeded")}

# The errors an operation answers in its own words, by (method, path) and status.
OPERATION_ERRORS: dict[tuple[str, str], dict[int, dict[str, Any]]] = {
    ("post", "/v1/jobs"): {
        409: _IDEMPOTENCY_IN_USE,
        422: error_body("dataset_not_found", f"no dataset with id {TRAIN}", "dataset.train"),
        429: error_body("job_quota_exceeded", "this project already has 20 queued or running "
                                          "jobs, its quota (FT_MAX_ACTIVE_JOBS_PER_PROJECT); "
                                          "submit again when one has finished, or cancel one"),
        503: error_body("broker_unavailable", f"job {JOB_ID} was saved but could not be sent to "
                                          "the workers: the broker is unreachable "
                                          "(OperationalError); try again shortly")},
    ("post", "/v1/jobs/validate"): {
        422: error_body("column_not_found", f"column 'sentence' is not in the train dataset "
                                        f"{DATASET_ID}; its columns are: text, label.",
                    "dataset.text_column")},
    ("post", "/v1/datasets"): {
        400: error_body("invalid_multipart", "send the dataset as multipart/form-data with a "
                                         "'file' part"),
        409: _IDEMPOTENCY_IN_USE,
        413: error_body("upload_too_large", "the upload is larger than the limit of 2147483648 "
                                        "bytes (FT_MAX_UPLOAD_BYTES)", "file"),
        422: error_body("dataset_ragged_rows", "Line 42 has 3 fields but the header has 2. Check "
                                           "the delimiters and the quoting of values holding "
                                           "them.")},
    ("delete", "/v1/datasets/{dataset_id}"): {
        409: error_body("dataset_in_use", f"dataset {DATASET_ID} is used by active jobs: {JOB_ID}; "
                                      "cancel them or wait for them to finish")},
    ("post", "/v1/jobs/{job_id}/cancel"): {
        409: error_body("job_already_finished", f"job {JOB_ID} has already finished (succeeded); "
                                            "nothing to cancel")},
    ("get", "/v1/jobs/{job_id}/artifacts/{path}"): _DOWNLOAD_ERRORS,
    ("get", "/v1/jobs/{job_id}/model"): _DOWNLOAD_ERRORS,
    ("post", "/v1/keys"): {**_ADMIN_REQUIRED, 422: error_body(
        "invalid_request", "project: String should match pattern '^[a-z0-9][a-z0-9._-]{0,63}$'",
        "project")},
    ("get", "/v1/keys"): _ADMIN_REQUIRED,
    ("delete", "/v1/keys/{prefix}"): _ADMIN_REQUIRED,
    ("get", "/v1/workers"): {403: error_body("admin_required",
                                             "only an admin key can list the workers")},
    ("get", "/readyz"): {503: error_body("not_ready", "broker: no answer within 3 s")},
}


def operation_successes() -> dict[tuple[str, str, str], dict[str, tuple[str, Any]]]:
    """Answers that differ by operation (or by the request example they answer, for Postman,
    which pairs request and response examples by name), by (method, path, status)."""
    per_task_job = {task: (summary, job(task)) for task, (summary, _) in JOB_SPECS.items()}
    pending = {task: (f"{summary}: no worker answered in time, poll `url`", dry_run(done=False))
               for task, (summary, _) in JOB_SPECS.items()}
    return {
        ("post", "/v1/jobs", "201"): per_task_job,
        ("post", "/v1/jobs/validate", "200"): {"text-classification": (
            "The SST-2 recipe's report", dry_run(done=True))},
        ("post", "/v1/jobs/validate", "202"): pending,
        ("post", "/v1/jobs/{job_id}/cancel", "200"): {"cancelled": (
            "A queued job, cancelled", job("text-classification", "cancelled"))},
        ("get", "/readyz", "200"): {"ready": ("Ready", {"status": "ready"})},
    }
