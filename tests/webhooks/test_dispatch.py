"""The dispatcher against a real HTTP receiver on loopback: signed deliveries that both
verifying libraries accept, retries with backoff, each attempt recorded, give-up after the
retry window, claims that two dispatchers never share. SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
from openai import OpenAI
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import transaction
from app.jobs import lifecycle
from app.models import DeliveryStatus, WebhookDelivery
from app.webhooks.dispatcher import claim
from tests.lifecycle.conftest import Jobs
from tests.webhooks.conftest import TEST_SETTINGS, Hooks, dispatching, poll
from tests.webhooks.receiver import Receiver, self_signed


def test_a_succeeded_job_reaches_the_receiver_signed(jobs: Jobs, hooks: Hooks,
                                                     webhook_settings: Settings) -> None:
    with Receiver() as receiver, dispatching(jobs.db, webhook_settings):
        endpoint, secret = hooks.register(receiver.url(), "job.succeeded")
        lease = jobs.running()
        assert jobs.do(lambda session: lifecycle.succeed(session, lease, {"eval_f1": 0.9}, 2.0))
        (request,) = receiver.wait_for(1)
        (delivery,) = hooks.wait_until_finished(endpoint, 1)
    assert request.path == "/hooks/finetune"
    headers = request.headers
    assert headers["webhook-id"] == delivery.id and headers["webhook-signature"].startswith("v1,")
    assert headers["content-type"] == "application/json"
    # The two libraries a receiver would use, as they are.
    verified: dict[str, Any] = standardwebhooks.Webhook(secret).verify(request.body, headers)
    event = OpenAI(api_key="unused").webhooks.unwrap(request.body, headers, secret=secret)
    assert verified == json.loads(delivery.body)
    assert event.type == verified["type"] == "job.succeeded"
    assert verified["data"]["id"] == lease.job_id and verified["data"]["status"] == "succeeded"
    assert verified["data"]["metrics"]["final"] == {"eval_f1": 0.9}
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(request.body.replace(b"0.9", b"1.0"), headers)
    assert delivery.status == DeliveryStatus.SUCCEEDED and delivery.finished_at is not None
    (attempt,) = hooks.attempts(delivery.id)
    assert attempt.status_code == 200 and attempt.error is None and attempt.response == "ok"
    assert attempt.duration_ms is not None and attempt.ended_at is not None


def test_a_receiver_that_fails_twice_gets_it_on_the_third_try(
        jobs: Jobs, hooks: Hooks, webhook_settings: Settings) -> None:
    with Receiver(500, 503) as receiver, dispatching(jobs.db, webhook_settings):
        endpoint, secret = hooks.register(receiver.url(), "job.queued")
        jobs.submit()
        requests = receiver.wait_for(3)
        (delivery,) = hooks.wait_until_finished(endpoint, 1)
    assert delivery.status == DeliveryStatus.SUCCEEDED and delivery.attempts == 3
    assert [a.status_code for a in hooks.attempts(delivery.id)] == [500, 503, 200]
    # One message: the same id and body each time, each attempt signed for its own time.
    assert {r.headers["webhook-id"] for r in requests} == {delivery.id}
    assert {r.body for r in requests} == {delivery.body.encode()}
    for request in requests:
        standardwebhooks.Webhook(secret).verify(request.body, request.headers)


def test_no_answer_and_redirects_are_failed_attempts(jobs: Jobs, hooks: Hooks,
                                                     webhook_settings: Settings) -> None:
    dead = "http://127.0.0.1:9/hooks"  # discard port: nothing listens
    with Receiver(302) as receiver, dispatching(jobs.db, webhook_settings):
        redirected, _ = hooks.register(receiver.url(), "job.queued")
        refused, _ = hooks.register(dead, "job.queued")
        jobs.submit()
        receiver.wait_for(2)
        (delivered,) = hooks.wait_until_finished(redirected, 1)
    first, second = hooks.attempts(delivered.id)[:2]
    assert first.status_code == 302 and "not followed" in (first.error or "")
    assert second.status_code == 200
    (unreachable,) = hooks.deliveries(refused)
    assert unreachable.status == DeliveryStatus.PENDING and unreachable.attempts >= 1
    assert "ConnectError" in (hooks.attempts(unreachable.id)[0].error or "")


def test_given_up_once_the_event_is_older_than_the_retry_window(
        jobs: Jobs, hooks: Hooks) -> None:
    settings = Settings(**{**TEST_SETTINGS, "webhook_retry_window_seconds": 0.2})
    with Receiver(500, 500, 500, 500, 500, 500, 500, 500) as receiver, \
            dispatching(jobs.db, settings):
        endpoint, _ = hooks.register(receiver.url(), "job.queued")
        jobs.submit()
        (delivery,) = hooks.wait_until_finished(endpoint, 1)
    assert delivery.status == DeliveryStatus.FAILED and delivery.finished_at is not None
    attempts = hooks.attempts(delivery.id)
    assert len(attempts) == delivery.attempts == len(receiver.received) >= 2
    # Given up only after a try made once the window had passed: retried for all of it.
    assert (attempts[-1].started_at - delivery.created_at).total_seconds() >= 0.2


def test_https_is_checked_against_the_name_in_the_url(
        jobs: Jobs, hooks: Hooks, webhook_settings: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The attempt connects to the checked address, yet verifies the certificate for the
    URL's name: a certificate for `localhost` passes for https://localhost and fails for
    https://127.0.0.1."""
    cert, key = self_signed(tmp_path, "localhost")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the operator's private CA
    with Receiver(tls=(cert, key)) as receiver, dispatching(jobs.db, webhook_settings):
        named, secret = hooks.register(receiver.url("localhost"), "job.queued")
        by_address, _ = hooks.register(receiver.url(), "job.queued")
        jobs.submit()
        (request,) = receiver.wait_for(1)
        hooks.wait_until_finished(named, 1)
        (failed, *_) = _wait_for_attempt(hooks, by_address)
    assert request.headers["host"] == f"localhost:{receiver.port}"
    standardwebhooks.Webhook(secret).verify(request.body, request.headers)
    assert "CERTIFICATE_VERIFY_FAILED" in (failed.error or ""), failed.error


def test_a_url_that_now_resolves_to_a_forbidden_address_is_not_sent(
        jobs: Jobs, hooks: Hooks) -> None:
    """The address is checked again at every attempt: here the operator withdrew loopback."""
    with Receiver() as receiver:
        endpoint, _ = hooks.register(receiver.url(), "job.queued")
        jobs.submit()
        with dispatching(jobs.db, Settings(**{**TEST_SETTINGS,
                                              "webhook_allowed_networks": ""})):
            attempts = _wait_for_attempt(hooks, endpoint)
        assert receiver.received == []
    assert "not sent" in (attempts[0].error or "") and "loopback" in (attempts[0].error or "")


def _wait_for_attempt(hooks: Hooks, endpoint_id: str) -> list[Any]:
    def ended() -> list[Any] | None:
        attempts = [attempt for delivery in hooks.deliveries(endpoint_id)
                    for attempt in hooks.attempts(delivery.id) if attempt.ended_at is not None]
        return attempts or None

    return poll(ended, "no attempt was made")


# PostgreSQL only: SKIP LOCKED is its feature, and on SQLite one dispatcher runs.
@pytest.mark.postgres
@pytest.mark.parametrize("db", ["postgres"], indirect=True)
def test_two_dispatchers_never_claim_the_same_delivery(jobs: Jobs, hooks: Hooks) -> None:
    endpoint, _ = hooks.register("http://127.0.0.1:9/hooks", "job.queued")
    for _ in range(4):
        jobs.submit()
    first, second = jobs.db(), jobs.db()
    try:
        taken = claim(first, 3, 60.0)  # rows locked until `first` commits
        others = claim(second, 10, 60.0)
        assert len(taken) == 3 and len(others) == 1
        assert not {c.delivery_id for c in taken} & {c.delivery_id for c in others}
        first.commit()
        second.commit()
        # Claimed: no longer due until their lease runs out.
        assert claim(first, 10, 60.0) == []
        _expire_claims(jobs.db, endpoint)
        assert len(claim(first, 10, 60.0)) == 4
        first.rollback()
    finally:
        first.close()
        second.close()


def _expire_claims(db: sessionmaker[Session], endpoint_id: str) -> None:
    with transaction(db) as session:
        session.execute(update(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
                        .values(claimed_until=WebhookDelivery.created_at))
        assert session.scalars(select(WebhookDelivery.claimed_until)
                               .where(WebhookDelivery.endpoint_id == endpoint_id)).all()
