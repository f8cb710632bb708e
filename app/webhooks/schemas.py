from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.webhooks.outbox import EventType


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048,
                     description="Where events are POSTed: https, or http inside a network "
                                 "the operator allows")
    event_types: list[EventType] = Field(min_length=1, max_length=len(EventType),
                                         description="The events to send there")
    description: str | None = Field(default=None, max_length=500, pattern=r"^[^\x00]*$")


class WebhookOut(BaseModel):
    id: str
    url: str
    event_types: list[EventType]
    description: str | None
    created_at: datetime

    @classmethod
    def from_endpoint(cls, endpoint: WebhookEndpoint) -> WebhookOut:
        return cls(id=endpoint.id, url=endpoint.url, event_types=endpoint.event_types,
                   description=endpoint.description, created_at=endpoint.created_at)


class CreatedWebhook(WebhookOut):
    secret: str = Field(description="The signing secret (`whsec_` and base64): shown this once "
                                    "and never again")


class AttemptOut(BaseModel):
    number: int
    started_at: datetime
    duration_ms: int | None = Field(description="Null while the attempt is under way")
    status_code: int | None = Field(description="The receiver's HTTP status; 2xx delivers")
    error: str | None = Field(description="Why the attempt failed without a status, or why "
                                          "its status did not deliver (a redirect)")
    response: str | None = Field(description="The start of the receiver's answer")

    @classmethod
    def from_attempt(cls, attempt: WebhookAttempt) -> AttemptOut:
        return cls(number=attempt.number, started_at=attempt.started_at,
                   duration_ms=attempt.duration_ms, status_code=attempt.status_code,
                   error=attempt.error, response=attempt.response)


class DeliveryOut(BaseModel):
    id: str = Field(description="The `webhook-id` header: the same at every attempt")
    event_type: EventType
    job_id: str | None
    status: DeliveryStatus = Field(description="pending until delivered (succeeded) or given "
                                               "up a day after the event (failed)")
    next_attempt_at: datetime | None = Field(description="When a pending delivery is tried "
                                                         "next")
    attempts: list[AttemptOut]
    payload: dict[str, Any] = Field(description="The body sent")
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_delivery(cls, delivery: WebhookDelivery,
                      attempts: list[WebhookAttempt]) -> DeliveryOut:
        pending = delivery.status == DeliveryStatus.PENDING
        return cls(id=delivery.id, event_type=EventType(delivery.event_type),
                   job_id=delivery.job_id, status=DeliveryStatus(delivery.status),
                   next_attempt_at=delivery.next_attempt_at if pending else None,
                   attempts=[AttemptOut.from_attempt(attempt) for attempt in attempts],
                   payload=json.loads(delivery.body), created_at=delivery.created_at,
                   finished_at=delivery.finished_at)
