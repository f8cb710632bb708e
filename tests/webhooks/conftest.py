"""Webhook fixtures: the lifecycle tests' databases and jobs (moved by the lifecycle's own
operations), endpoints of the default project registered through the service, and a
dispatcher running in a thread of the test."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.auth import Caller
from app.config import Settings
from app.db import transaction
from app.models import (
    DEFAULT_PROJECT_ID,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from app.webhooks import service
from app.webhooks.dispatcher import Dispatcher
from tests.lifecycle.conftest import Jobs, db, jobs  # noqa: F401 - fixtures used here

# Loopback only, as the tests' receivers listen there; the retries come quickly.
TEST_SETTINGS = {"webhook_allowed_networks": "127.0.0.1/32",
                 "webhook_retry_first_seconds": 0.05, "webhook_timeout_seconds": 3.0}


T = TypeVar("T")


@pytest.fixture
def webhook_settings() -> Settings:
    return Settings(**TEST_SETTINGS)


def poll(look: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """What `look` finds, once it finds something; fails saying `what` did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := look()) is not None:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout} s")


@dataclass
class Hooks:
    """Registers endpoints of the default project, reads their deliveries, and deletes them
    at the end of the test so that the next test's dispatcher does not see them."""

    db: sessionmaker[Session]
    settings: Settings
    registered: list[str] = field(default_factory=list)

    def register(self, url: str, *event_types: str,
                 project_id: str = DEFAULT_PROJECT_ID) -> tuple[str, str]:
        """The new endpoint's id and secret."""
        with transaction(self.db) as session:
            endpoint, secret = service.create(session, Caller(project_id, admin=True),
                                              self.settings, url, list(event_types), None)
            self.registered.append(endpoint.id)
            return endpoint.id, secret

    def deliveries(self, endpoint_id: str) -> list[WebhookDelivery]:
        with self.db() as session:
            return list(session.scalars(
                select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
                .order_by(WebhookDelivery.created_at, WebhookDelivery.id)))

    def attempts(self, delivery_id: str) -> list[WebhookAttempt]:
        with self.db() as session:
            return list(session.scalars(select(WebhookAttempt)
                                        .where(WebhookAttempt.delivery_id == delivery_id)
                                        .order_by(WebhookAttempt.number)))

    def wait_until_finished(self, endpoint_id: str, count: int) -> list[WebhookDelivery]:
        """The endpoint's `count` deliveries, once none is pending."""
        def finished() -> list[WebhookDelivery] | None:
            deliveries = self.deliveries(endpoint_id)
            done = len(deliveries) == count and all(
                delivery.status != DeliveryStatus.PENDING for delivery in deliveries)
            return deliveries if done else None

        return poll(finished, f"{count} deliveries did not finish")

    def close(self) -> None:
        with transaction(self.db) as session:
            for endpoint_id in self.registered:
                endpoint = session.get(WebhookEndpoint, endpoint_id)
                if endpoint is not None:
                    session.delete(endpoint)


@pytest.fixture
def hooks(db: sessionmaker[Session], webhook_settings: Settings) -> Iterator[Hooks]:  # noqa: F811
    registered = Hooks(db, webhook_settings)
    yield registered
    registered.close()


@contextmanager
def dispatching(db: sessionmaker[Session], settings: Settings,  # noqa: F811
                **options: Any) -> Iterator[Dispatcher]:
    """A dispatcher polling often, in a thread, until the block ends."""
    dispatcher = Dispatcher(db, settings, poll_seconds=0.05, **options)
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield dispatcher
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the dispatcher did not stop"
