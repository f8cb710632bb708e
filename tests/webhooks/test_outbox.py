"""The outbox: every lifecycle move that records a job event of a webhook type writes one
delivery per endpoint that asked for it, in the move's own transaction. Runs on SQLite and
PostgreSQL, with the lifecycle's real operations and no dispatcher."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session

from app.db import transaction
from app.jobs import lifecycle
from app.models import Project
from app.webhooks.outbox import EventType
from tests.lifecycle.conftest import Jobs
from tests.webhooks.conftest import Hooks

URL = "http://127.0.0.1:9/hooks"
EVERY_TYPE = [event_type.value for event_type in EventType]


def payloads(hooks: Hooks, endpoint_id: str) -> list[dict[str, Any]]:
    return [json.loads(delivery.body) for delivery in hooks.deliveries(endpoint_id)]


def _evaluate(session: Session, job_id: str, **metrics: float) -> None:
    # As the trainer's callback records an evaluation (worker/reporting.py).
    lifecycle.add_event(session, job_id, "evaluation", "Evaluation at step 4",
                        {"step": 4, "epoch": 1.0, "metrics": metrics})


def test_each_move_queues_its_event_with_the_job_as_it_became(jobs: Jobs,
                                                              hooks: Hooks) -> None:
    endpoint, _ = hooks.register(URL, *EVERY_TYPE)
    lease = jobs.running()
    jobs.do(lambda session: _evaluate(session, lease.job_id, eval_loss=0.25))
    jobs.do(lambda session: lifecycle.succeed(session, lease, {"eval_loss": 0.2}, 3.0))
    sent = payloads(hooks, endpoint)
    assert [p["type"] for p in sent] == ["job.queued", "job.started", "job.evaluation",
                                         "job.succeeded"]
    assert [p["data"]["status"] for p in sent] == ["queued", "running", "running", "succeeded"]
    assert all(p["data"]["id"] == lease.job_id and p["timestamp"].endswith("Z") for p in sent)
    queued, started, evaluation, succeeded = (p["data"] for p in sent)
    assert queued["task"] == "text-classification" and queued["model"] == "tiny/bert"
    assert started["attempt"] == 1 and started["started_at"] is not None
    assert evaluation["event"]["data"] == {"step": 4, "epoch": 1.0,
                                           "metrics": {"eval_loss": 0.25}}
    assert succeeded["metrics"]["final"] == {"eval_loss": 0.2}
    assert succeeded["finished_at"] is not None and succeeded["error"] is None


def test_a_diverged_metric_is_sent_as_null(jobs: Jobs, hooks: Hooks) -> None:
    endpoint, _ = hooks.register(URL, "job.evaluation")
    lease = jobs.running()
    jobs.do(lambda session: _evaluate(session, lease.job_id, eval_loss=float("nan")))
    (sent,) = payloads(hooks, endpoint)  # NaN is not JSON
    assert sent["data"]["event"]["data"]["metrics"] == {"eval_loss": None}


@pytest.mark.parametrize(("move", "event_type", "status"), [
    (lambda jobs, lease: jobs.do(lambda s: lifecycle.fail(s, lease, "dataset_invalid", "no")),
     "job.failed", "failed"),
    (lambda jobs, lease: jobs.do(lambda s: lifecycle.cancel(s, lease.job_id)) and jobs.do(
        lambda s: lifecycle.stop_cancelled(s, lease, 1.0)), "job.cancelled", "cancelled"),
    (lambda jobs, lease: jobs.do(lambda s: lifecycle.retry(
        s, lease, outcome="crashed", code="worker_crashed", message="SIGSEGV",
        runtime_seconds=1.0, log_tail=[], enqueue=jobs.enqueue)), "job.retrying", "queued"),
])
def test_the_ends_and_retries_of_a_running_job(jobs: Jobs, hooks: Hooks,
                                                move: Callable[[Jobs, Any], Any],
                                                event_type: str, status: str) -> None:
    endpoint, _ = hooks.register(URL, event_type)
    lease = jobs.running()
    move(jobs, lease)
    (sent,) = payloads(hooks, endpoint)
    assert sent["type"] == event_type and sent["data"]["status"] == status
    if event_type == "job.failed":
        assert sent["data"]["error"]["code"] == "dataset_invalid"
        assert sent["data"]["error"]["hint"]


def test_a_queued_job_cancelled(jobs: Jobs, hooks: Hooks) -> None:
    endpoint, _ = hooks.register(URL, "job.cancelled")
    job_id = jobs.submit()
    assert jobs.do(lambda session: lifecycle.cancel(session, job_id))
    assert [p["data"]["status"] for p in payloads(hooks, endpoint)] == ["cancelled"]


def test_only_the_types_asked_for_reach_an_endpoint(jobs: Jobs, hooks: Hooks) -> None:
    ends, everything = hooks.register(URL, "job.succeeded"), hooks.register(URL, *EVERY_TYPE)
    lease = jobs.running()
    jobs.do(lambda session: lifecycle.succeed(session, lease, {}, 1.0))
    assert [p["type"] for p in payloads(hooks, ends[0])] == ["job.succeeded"]
    assert len(payloads(hooks, everything[0])) == 3
    # Each endpoint's delivery has an id of its own: the webhook-id its receiver sees.
    assert len({d.id for d in hooks.deliveries(ends[0]) + hooks.deliveries(everything[0])}) == 4


def test_a_move_rolled_back_leaves_no_delivery(jobs: Jobs, hooks: Hooks) -> None:
    endpoint, _ = hooks.register(URL, "job.succeeded")
    lease = jobs.running()
    with pytest.raises(RuntimeError), transaction(jobs.db) as session:
        assert lifecycle.succeed(session, lease, {}, 1.0)
        raise RuntimeError("the commit never comes")
    assert hooks.deliveries(endpoint) == []
    assert jobs.do(lambda session: lifecycle.succeed(session, lease, {}, 1.0))
    assert len(hooks.deliveries(endpoint)) == 1


def test_another_projects_jobs_are_not_sent(jobs: Jobs, hooks: Hooks) -> None:
    with transaction(jobs.db) as session:
        session.add(other := Project(name=f"other-{uuid.uuid4().hex[:12]}"))
        session.flush()
        project_id = other.id
    endpoint, _ = hooks.register(URL, *EVERY_TYPE, project_id=project_id)
    jobs.running()
    assert hooks.deliveries(endpoint) == []


def test_events_of_no_webhook_type_queue_nothing(jobs: Jobs, hooks: Hooks) -> None:
    endpoint, _ = hooks.register(URL, *EVERY_TYPE)
    lease = jobs.running()
    jobs.do(lambda session: lifecycle.add_event(session, lease.job_id, "epoch", "Epoch 1", {}))
    jobs.do(lambda session: lifecycle.cancel(session, lease.job_id))  # cancelling: no type
    assert [p["type"] for p in payloads(hooks, endpoint)] == ["job.queued", "job.started"]
