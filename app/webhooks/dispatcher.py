"""The webhook dispatcher: it sends the outbox's due deliveries, in a process of its own.

`finetune webhooks` runs it, and `finetune up` starts one. Each claims due deliveries with
`SELECT ... FOR UPDATE SKIP LOCKED` and holds them under a lease (`claimed_until`) while it
sends, so any number of dispatchers may share a PostgreSQL database (on SQLite, run one). A
dispatcher that dies mid-send lets its deliveries go when the lease ends, and another sends
them again under the same `webhook-id`, by which receivers tell a repeat. A failed attempt is
tried again after 5 s, then five times longer each time up to a cap, with jitter, until the
event is a day old (the settings change these figures).
"""

from __future__ import annotations

import logging
import secrets
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import FrameType

from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app import migrate
from app.config import Settings
from app.db import make_engine, make_session_factory, transaction
from app.models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    utcnow,
)
from app.webhooks import sending
from app.webhooks.destinations import Policy

logger = logging.getLogger("finetune.webhooks")

PENDING, SUCCEEDED, FAILED = (DeliveryStatus.PENDING, DeliveryStatus.SUCCEEDED,
                              DeliveryStatus.FAILED)
_GROWTH = 5.0
_JITTER = (0.8, 1.2)
_random = secrets.SystemRandom()


@dataclass(frozen=True)
class Claimed:
    """A delivery this dispatcher holds for one attempt, with what sending it needs."""

    delivery_id: str
    number: int
    url: str
    secret: str
    body: str
    created_at: datetime
    claimed_at: datetime


def claim(session: Session, limit: int, lease_seconds: float) -> list[Claimed]:
    """Take up to `limit` due deliveries for one attempt each, under a lease."""
    now = utcnow()
    due = list(session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now,
               or_(WebhookDelivery.claimed_until.is_(None),
                   WebhookDelivery.claimed_until <= now))
        .order_by(WebhookDelivery.next_attempt_at).limit(limit)
        .with_for_update(skip_locked=True)))
    if not due:
        return []
    endpoints = {row.id: row for row in session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.url, WebhookEndpoint.secret)
        .where(WebhookEndpoint.id.in_({delivery.endpoint_id for delivery in due})))}
    claimed = []
    for delivery in due:
        if delivery.claimed_until is not None:
            # Its lease ran out: the dispatcher of the last attempt died before recording it.
            session.execute(
                update(WebhookAttempt)
                .where(WebhookAttempt.delivery_id == delivery.id,
                       WebhookAttempt.number == delivery.attempts,
                       WebhookAttempt.ended_at.is_(None))
                .values(ended_at=now, error="the dispatcher stopped before the answer was "
                                            "recorded; sent again under the same webhook-id"))
        delivery.attempts += 1
        delivery.claimed_until = now + timedelta(seconds=lease_seconds)
        session.add(WebhookAttempt(delivery_id=delivery.id, number=delivery.attempts,
                                   started_at=now))
        endpoint = endpoints[delivery.endpoint_id]
        claimed.append(Claimed(delivery.id, delivery.attempts, endpoint.url, endpoint.secret,
                               delivery.body, delivery.created_at, now))
    return claimed


def record(session: Session, claimed: Claimed, outcome: sending.Outcome,
           settings: Settings) -> None:
    """Store the attempt, and what comes next: done, another attempt later, or given up."""
    now = utcnow()
    session.execute(
        update(WebhookAttempt)
        .where(WebhookAttempt.delivery_id == claimed.delivery_id,
               WebhookAttempt.number == claimed.number)
        .values(ended_at=now, duration_ms=outcome.duration_ms, status_code=outcome.status_code,
                error=outcome.error, response=outcome.response))
    if outcome.delivered:
        after = {"status": SUCCEEDED, "finished_at": now}
    # Judged by when the attempt began, so that the last try is one made after the window.
    elif (claimed.claimed_at - claimed.created_at
          >= timedelta(seconds=settings.webhook_retry_window_seconds)):
        after = {"status": FAILED, "finished_at": now}
    else:
        wait_seconds = retry_delay(claimed.number, settings)
        after = {"next_attempt_at": now + timedelta(seconds=wait_seconds)}
    # Only while the claim is still this one: a lease that ran out belongs to a newer attempt.
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == claimed.delivery_id,
               WebhookDelivery.attempts == claimed.number, WebhookDelivery.status == PENDING)
        .values(claimed_until=None, **after))


def retry_delay(failed_attempts: int, settings: Settings) -> float:
    """The wait after the n-th failed attempt: the first wait, five times longer each time,
    up to the cap, with jitter so that many deliveries failing together spread out."""
    grown = settings.webhook_retry_first_seconds * _GROWTH ** min(failed_attempts - 1, 30)
    return min(grown, settings.webhook_retry_max_seconds) * _random.uniform(*_JITTER)


def lease_seconds(settings: Settings) -> float:
    """How long a claim holds: past one attempt's timeout, with room for the database."""
    return 3 * settings.webhook_timeout_seconds + 5


class Dispatcher:
    """Sends due deliveries with up to `concurrency` attempts in flight."""

    def __init__(self, session_factory: sessionmaker[Session], settings: Settings,
                 concurrency: int = 8, poll_seconds: float = 1.0) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.policy = Policy.from_settings(settings)
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.client = sending.new_client(settings.webhook_timeout_seconds)

    def run(self, stop: threading.Event) -> None:
        """Until `stop` is set; attempts in flight then finish (each within the timeout)."""
        sending_now: set[Future[None]] = set()
        with self.client, ThreadPoolExecutor(self.concurrency,
                                             thread_name_prefix="webhook") as pool:
            while not stop.is_set():
                for claimed in self._claim(self.concurrency - len(sending_now)):
                    sending_now.add(pool.submit(self.deliver, claimed))
                if sending_now:
                    done, sending_now = wait(sending_now, timeout=self.poll_seconds,
                                             return_when=FIRST_COMPLETED)
                    for future in done:
                        if (error := future.exception()) is not None:
                            # Its lease runs out and another attempt follows; say why.
                            logger.error("a webhook attempt failed", exc_info=error)
                else:
                    stop.wait(self.poll_seconds)

    def deliver(self, claimed: Claimed) -> None:
        outcome = sending.send(self.client, self.policy, claimed.url, claimed.delivery_id,
                               claimed.secret, claimed.body.encode(),
                               self.settings.webhook_timeout_seconds)
        logger.info("attempt %d of %s to %s: %s", claimed.number, claimed.delivery_id,
                    claimed.url, outcome.error or f"HTTP {outcome.status_code}")
        try:
            with transaction(self.session_factory) as session:
                record(session, claimed, outcome, self.settings)
        except SQLAlchemyError:
            # Its lease runs out, and the delivery is attempted again under the same id.
            logger.warning("could not record attempt %d of %s: database unreachable",
                           claimed.number, claimed.delivery_id)

    def _claim(self, limit: int) -> list[Claimed]:
        if limit <= 0:
            return []
        try:
            with transaction(self.session_factory) as session:
                return claim(session, limit, lease_seconds(self.settings))
        except SQLAlchemyError:
            logger.warning("could not claim webhook deliveries: database unreachable")
            return []


def run_dispatcher(settings: Settings) -> int:
    """`finetune webhooks`: dispatch until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # Each attempt is logged once, by us, with the URL as registered (httpx sees the address).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    engine = make_engine(settings.database_url)
    migrate.migrate_or_refuse(engine, settings.database_url, settings.migrate_on_start)
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    logger.info("webhook dispatcher started")
    try:
        Dispatcher(make_session_factory(engine), settings).run(stop)
    finally:
        engine.dispose()
    logger.info("webhook dispatcher stopped")
    return 0

