"""The webhook routes' examples for the OpenAPI document (app/openapi_examples.py merges them):
an endpoint, its secret shown once, and a delivery the receiver took on the second try."""

from __future__ import annotations

from typing import Any

from app.openapi_examples import (
    CREATED,
    FINISHED,
    JOB_ID,
    MINILM,
    PROJECT,
    STARTED,
    error_body,
)

WEBHOOK_ID = "wh_3c8e1f5a9b2d4c6e8f0a1b3c5d7e9f2a"
DELIVERY_ID = "msg_6a1f3c5e7b9d4f2a8c0e1b3d5f7a9c2e"
_BODY = {"url": "https://ml-platform.example.com/hooks/finetune",
         "event_types": ["job.succeeded", "job.failed", "job.cancelled"],
         "description": "tell the platform when a job ends"}
# A made-up secret, in the shape the API shows once.
_SECRET = "whsec_5Wq2cMUVc7mJ0sQ1m1eA9Tq3dXgF8bN2kL6pR4yZ0aE="  # nosec B105
_ADMIN_REQUIRED = {403: error_body("admin_required", "only an admin key can manage webhooks")}


def _webhook() -> dict[str, Any]:
    return {"id": WEBHOOK_ID, **_BODY, "event_types": sorted(_BODY["event_types"]),
            "created_at": CREATED}


def _delivery() -> dict[str, Any]:
    answered = "2026-01-15T09:40:03Z"
    metrics = {"eval_accuracy": 0.836, "eval_loss": 0.3891}
    data = {"id": JOB_ID, "project_id": PROJECT, "name": None, "status": "succeeded",
            "task": "text-classification", "model": MINILM, "attempt": 1,
            "progress": {"step": 250, "total_steps": 250, "epoch": 1.0},
            "metrics": {"final": metrics}, "error": None, "created_at": CREATED,
            "started_at": STARTED, "finished_at": FINISHED,
            "event": {"kind": "succeeded", "message": "Job succeeded",
                      "data": {"metrics": metrics}}}
    return {"id": DELIVERY_ID, "event_type": "job.succeeded", "job_id": JOB_ID,
            "status": "succeeded", "next_attempt_at": None,
            "attempts": [
                {"number": 1, "started_at": FINISHED, "duration_ms": 10004,
                 "status_code": None, "error": "no answer within 10 s", "response": None},
                {"number": 2, "started_at": answered, "duration_ms": 87, "status_code": 200,
                 "error": None, "response": "ok"}],
            "payload": {"type": "job.succeeded", "timestamp": FINISHED, "data": data},
            "created_at": FINISHED, "finished_at": answered}


REQUEST_EXAMPLES = {("post", "/v1/webhooks"): {"platform": (
    "Tell the ML platform when a job ends (with an admin key)", _BODY)}}
SUCCESS_EXAMPLES = {
    "CreatedWebhook": {**_webhook(), "secret": _SECRET},
    "WebhookOut": _webhook(),
    "Page_WebhookOut_": {"data": [_webhook()], "has_more": False},
    "Page_DeliveryOut_": {"data": [_delivery()], "has_more": False},
}
NOT_FOUND = {"webhook_id": error_body("not_found", f"no webhook {WEBHOOK_ID} in this project",
                                      "webhook_id")}
OPERATION_ERRORS = {
    ("post", "/v1/webhooks"): {**_ADMIN_REQUIRED, 422: error_body(
        "webhook_url_not_allowed", "the webhook URL's host 10.0.3.7 resolves to 10.0.3.7, a "
        "private address; webhooks go to public addresses only, unless the operator allows "
        "the network (FT_WEBHOOK_ALLOWED_NETWORKS, or FT_WEBHOOK_ALLOW_PRIVATE=true)", "url")},
    ("get", "/v1/webhooks"): _ADMIN_REQUIRED,
    ("get", "/v1/webhooks/{webhook_id}"): _ADMIN_REQUIRED,
    ("delete", "/v1/webhooks/{webhook_id}"): _ADMIN_REQUIRED,
    ("get", "/v1/webhooks/{webhook_id}/deliveries"): _ADMIN_REQUIRED,
}
