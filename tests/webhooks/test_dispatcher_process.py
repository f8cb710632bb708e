"""The real `finetune webhooks` process on PostgreSQL: the job ends while no dispatcher runs,
a dispatcher killed with SIGKILL between its claim and the answer loses nothing, and the
next one delivers the same message, which both verifying libraries accept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import standardwebhooks
from openai import OpenAI
from sqlalchemy.orm import Session, sessionmaker

from app import migrate
from app.config import Settings
from app.db import make_engine, make_session_factory
from app.jobs import lifecycle
from app.models import DeliveryStatus
from tests.conftest import postgres_database
from tests.e2e.service import finetune, service_env
from tests.lifecycle.conftest import Jobs
from tests.webhooks.conftest import TEST_SETTINGS, Hooks, poll
from tests.webhooks.receiver import HANG, Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

TIMEOUT_SECONDS = 3  # an attempt's limit: a claim then holds 3 x 3 + 5 = 14 s


@pytest.fixture
def database() -> Iterator[tuple[str, sessionmaker[Session]]]:
    with postgres_database() as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        yield url, make_session_factory(engine)
        engine.dispose()


def start_dispatcher(url: str, workdir: Path) -> subprocess.Popen[bytes]:
    env = service_env({"FT_DATABASE_URL": url, "FT_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
                       "FT_WEBHOOK_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
                       "FT_WEBHOOK_RETRY_FIRST_SECONDS": "0.1"})
    return finetune("webhooks", env=env, cwd=workdir, log=workdir / "webhooks.log")


def test_a_dispatcher_killed_mid_send_loses_nothing(
        database: tuple[str, sessionmaker[Session]], tmp_path: Path) -> None:
    url, db = database
    jobs, hooks = Jobs(db), Hooks(db, Settings(**TEST_SETTINGS))
    with Receiver(HANG) as receiver:
        endpoint, secret = hooks.register(receiver.url(), "job.succeeded")
        # The job ends while no dispatcher runs: the outbox row waits in the database.
        lease = jobs.running()
        assert jobs.do(lambda session: lifecycle.succeed(session, lease, {"eval_f1": 1.0}, 1.0))
        first = start_dispatcher(url, tmp_path)
        try:
            (hung,) = receiver.wait_for(1)  # claimed and sent; the answer never comes
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
        finally:
            if first.poll() is None:
                first.kill()
        (delivery,) = hooks.deliveries(endpoint)
        assert delivery.status == DeliveryStatus.PENDING and delivery.claimed_until is not None
        (attempt,) = hooks.attempts(delivery.id)
        assert attempt.ended_at is None  # nobody recorded it
        receiver.released.set()

        second = start_dispatcher(url, tmp_path)
        try:
            started = time.monotonic()
            requests = receiver.wait_for(2, timeout=60)
            (delivered,) = hooks.wait_until_finished(endpoint, 1)
            # It waited for the dead dispatcher's claim to run out, and not much longer.
            assert time.monotonic() - started < 3 * TIMEOUT_SECONDS + 5 + 10
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=30) == 0
        finally:
            if second.poll() is None:
                second.kill()
    again = requests[1]
    assert again.headers["webhook-id"] == hung.headers["webhook-id"] == delivery.id
    assert again.body == hung.body
    verified = standardwebhooks.Webhook(secret).verify(again.body, again.headers)
    event = OpenAI(api_key="unused").webhooks.unwrap(again.body, again.headers, secret=secret)
    assert event.type == verified["type"] == "job.succeeded"
    assert verified == json.loads(delivered.body)
    assert verified["data"]["id"] == lease.job_id
    assert delivered.status == DeliveryStatus.SUCCEEDED
    interrupted, answered = hooks.attempts(delivery.id)
    assert "dispatcher stopped" in (interrupted.error or "") and interrupted.ended_at
    assert answered.status_code == 200
    assert poll(lambda: "webhook dispatcher stopped" in (tmp_path / "webhooks.log").read_text()
                or None, "no clean stop in the log")
