from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from app.auth import Caller, CallerDep
from app.deps import SessionDep, SessionRoute, SettingsDep
from app.errors import Forbidden, error_responses
from app.models import DeliveryStatus
from app.pagination import AfterQuery, LimitQuery, Page
from app.params import ID_PATTERN
from app.webhooks import service
from app.webhooks.schemas import CreatedWebhook, DeliveryOut, WebhookCreate, WebhookOut

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], route_class=SessionRoute)

WebhookId = Annotated[str, Path(pattern=ID_PATTERN, description="A webhook's id (`wh_…`)")]


async def _require_admin(caller: CallerDep) -> Caller:
    if not caller.admin:
        raise Forbidden("only an admin key can manage webhooks", code="admin_required")
    return caller


WebhookAdmin = Annotated[Caller, Depends(_require_admin)]


@router.post("", status_code=201, response_model=CreatedWebhook,
             responses=error_responses(400, 413, 422))
def create_webhook(body: WebhookCreate, caller: WebhookAdmin, session: SessionDep,
                   settings: SettingsDep) -> CreatedWebhook:
    """Register an endpoint for the key's project; its signing secret is shown only here."""
    endpoint, secret = service.create(session, caller, settings, body.url, body.event_types,
                                      body.description)
    return CreatedWebhook(**WebhookOut.from_endpoint(endpoint).model_dump(), secret=secret)


@router.get("", response_model=Page[WebhookOut], responses=error_responses(422))
def list_webhooks(caller: WebhookAdmin, session: SessionDep, limit: LimitQuery = 20,
                  after: AfterQuery = None) -> Page[WebhookOut]:
    """The project's webhook endpoints, newest first."""
    endpoints, has_more = service.list_page(session, caller, limit, after)
    return Page[WebhookOut](data=[WebhookOut.from_endpoint(e) for e in endpoints],
                            has_more=has_more)


@router.get("/{webhook_id}", response_model=WebhookOut, responses=error_responses(404))
def get_webhook(webhook_id: WebhookId, caller: WebhookAdmin,
                session: SessionDep) -> WebhookOut:
    """Get an endpoint (its secret is not shown again)."""
    return WebhookOut.from_endpoint(service.get(session, caller, webhook_id))


@router.delete("/{webhook_id}", status_code=204, responses=error_responses(404))
def delete_webhook(webhook_id: WebhookId, caller: WebhookAdmin,
                   session: SessionDep) -> Response:
    """Delete an endpoint and its deliveries; pending ones are not sent."""
    service.delete(session, caller, webhook_id)
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=Page[DeliveryOut],
            responses=error_responses(404, 422))
def list_deliveries(webhook_id: WebhookId, caller: WebhookAdmin, session: SessionDep,
                    status: Annotated[DeliveryStatus | None,
                                      Query(description="Only deliveries in this status")] = None,
                    limit: LimitQuery = 20, after: AfterQuery = None) -> Page[DeliveryOut]:
    """The endpoint's deliveries, newest first, each with every attempt: time, status code or
    error, duration."""
    page, has_more = service.deliveries(session, caller, webhook_id, status, limit, after)
    return Page[DeliveryOut](data=[DeliveryOut.from_delivery(delivery, attempts)
                                   for delivery, attempts in page], has_more=has_more)
