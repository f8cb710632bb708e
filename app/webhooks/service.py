"""A project's webhook endpoints and their deliveries: register, list, get, delete.

Endpoints belong to the caller's project, admin or not: an admin key manages the webhooks of
its own project.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth import Caller
from app.config import Settings
from app.errors import InvalidRequest, NotFound
from app.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.pagination import paginate
from app.webhooks import signing
from app.webhooks.destinations import (
    DisallowedUrl,
    InvalidUrl,
    Policy,
    UnresolvedHost,
    resolve,
)
from app.webhooks.outbox import EventType


def create(session: Session, caller: Caller, settings: Settings, url: str,
           event_types: list[EventType], description: str | None
           ) -> tuple[WebhookEndpoint, str]:
    """A new endpoint of the caller's project, and its secret, returned here only."""
    try:
        resolve(url, Policy.from_settings(settings))
    except UnresolvedHost:
        pass  # checked again before every attempt, on the dispatcher's machine
    except InvalidUrl as error:
        raise InvalidRequest(str(error), code="invalid_webhook_url", param="url") from None
    except DisallowedUrl as error:
        raise InvalidRequest(str(error), code="webhook_url_not_allowed", param="url") from None
    secret = signing.new_secret()
    endpoint = WebhookEndpoint(project_id=caller.project_id, url=url,
                               event_types=sorted(set(event_types)), description=description,
                               secret=secret)
    session.add(endpoint)
    session.flush()
    return endpoint, secret


def list_page(session: Session, caller: Caller, limit: int,
              after: str | None) -> tuple[list[WebhookEndpoint], bool]:
    return paginate(session, _of_project(caller), select(WebhookEndpoint), WebhookEndpoint,
                    limit, after)


def get(session: Session, caller: Caller, endpoint_id: str) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.project_id != caller.project_id:
        raise NotFound(f"no webhook {endpoint_id} in this project", param="webhook_id")
    return endpoint


def delete(session: Session, caller: Caller, endpoint_id: str) -> None:
    """Delete an endpoint with its deliveries: pending ones are not sent."""
    session.delete(get(session, caller, endpoint_id))
    session.flush()


def deliveries(session: Session, caller: Caller, endpoint_id: str,
               status: DeliveryStatus | None, limit: int, after: str | None
               ) -> tuple[list[tuple[WebhookDelivery, list[WebhookAttempt]]], bool]:
    """A page of the endpoint's deliveries, newest first, each with its attempts."""
    get(session, caller, endpoint_id)
    statement = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    if status is not None:
        statement = statement.where(WebhookDelivery.status == status)
    page, has_more = paginate(session, _of_project(caller), statement, WebhookDelivery, limit,
                              after)
    attempts: dict[str, list[WebhookAttempt]] = defaultdict(list)
    for attempt in session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_([delivery.id for delivery in page]))
            .order_by(WebhookAttempt.number)):
        attempts[attempt.delivery_id].append(attempt)
    return [(delivery, attempts[delivery.id]) for delivery in page], has_more


def _of_project(caller: Caller) -> Caller:
    """The caller seeing its own project only: an admin's usual view of every project does
    not extend to other projects' webhooks."""
    return dataclasses.replace(caller, admin=False)
