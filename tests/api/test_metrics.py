"""GET /metrics, scraped and parsed as Prometheus does: request counts by route template, the
jobs' figures from the database, who may scrape, and two API processes adding up."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr, ValidationError
from sqlalchemy import create_engine, update
from sqlalchemy.orm import sessionmaker

from app import migrate
from app.config import Settings
from app.db import transaction
from app.jobs import lifecycle
from app.metrics import MULTIPROCESS_ENV, reset_multiprocess_dir
from app.models import Job, utcnow
from tests.api.helpers import (
    assert_error,
    job_spec,
    place_worker,
    sentiment_dataset,
    start_job,
)
from tests.conftest import create_key, postgres_database
from tests.e2e.service import free_port, service_env, stop, wait_ready

TOKEN = "metrics-token-0123456789"
JOB_ROUTE = "/v1/jobs/{job_id}"
TASK = "text-classification"


def value(text: str, sample: str, **labels: str) -> float:
    """The sample named `sample` with exactly `labels`; 0 when the scrape has none."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == sample and found.labels == labels:
                return found.value
    return 0.0


def local_scraper(api: TestClient) -> TestClient:
    """A client on the API's own machine, without any key."""
    return TestClient(api.app, client=("127.0.0.1", 40000))


def scrape(api: TestClient) -> str:
    response = local_scraper(api).get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def change(api: TestClient, action: Callable[[], object]) -> Callable[..., float]:
    """Runs `action` between two scrapes; gives the change of a sample."""
    before = scrape(api)
    action()
    after = scrape(api)
    return lambda sample, **labels: value(after, sample, **labels) - value(before, sample,
                                                                            **labels)


def submit(api: TestClient, tmp_path: Path, headers: dict[str, str] | None = None) -> str:
    dataset = sentiment_dataset(api, tmp_path, headers=headers)
    response = api.post("/v1/jobs", json=job_spec(dataset["id"]), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_requests_are_counted_and_timed_by_route_template(api: TestClient,
                                                          tmp_path: Path) -> None:
    job_id = submit(api, tmp_path)

    def requests() -> None:
        for _ in range(3):
            assert api.get(f"/v1/jobs/{job_id}").status_code == 200
        assert api.get("/v1/jobs/job_unknown").status_code == 404
        sentiment_dataset(api, tmp_path / "again")  # a streamed upload, through the middleware
        # Refused by the body-size limit, before any routing.
        too_large = "x" * (api.app.state.settings.max_json_bytes + 1)
        assert api.post("/v1/jobs", content=too_large).status_code == 413
        # The dashboard's files: one route, whatever the file.
        assert api.get("/ui/static/js/app.js").status_code == 200
        assert api.get("/ui/static/css/app.css").status_code == 200

    delta = change(api, requests)
    assert delta("finetune_http_requests_total", route=JOB_ROUTE, method="GET",
                 status="200") == 3
    assert delta("finetune_http_requests_total", route=JOB_ROUTE, method="GET",
                 status="404") == 1
    assert delta("finetune_http_request_duration_seconds_count", route=JOB_ROUTE,
                 method="GET") == 4
    assert delta("finetune_http_requests_total", route="/v1/datasets", method="POST",
                 status="201") == 1
    assert delta("finetune_http_requests_total", route="unmatched", method="POST",
                 status="413") == 1
    assert delta("finetune_http_requests_total", route="/ui/static", method="GET",
                 status="200") == 2
    assert job_id not in scrape(api)


def test_jobs_by_status_and_project_are_counted_in_the_database(api: TestClient,
                                                                tmp_path: Path) -> None:
    _, running, cancelled = (submit(api, tmp_path / name)
                             for name in ("queued", "running", "cancelled"))
    start_job(api, running)
    assert api.post(f"/v1/jobs/{cancelled}/cancel").status_code == 200
    other = {"Authorization": f"Bearer {create_key(api.app, 'team-b')}"}
    submit(api, tmp_path / "other", headers=other)

    text = scrape(api)
    expected = {"queued": 1, "running": 1, "cancelled": 1, "succeeded": 0, "failed": 0,
                "cancelling": 0}
    assert {status: value(text, "finetune_jobs", project="team-a", status=status)
            for status in expected} == expected
    assert value(text, "finetune_jobs", project="team-b", status="queued") == 1
    assert value(text, "finetune_database_up") == 1


def test_the_fleet_is_counted_by_gpu_type_and_status(api: TestClient) -> None:
    place_worker(api, "a100-box:1", "a100-80gb", 2, job_id="job_busy")
    place_worker(api, "a100-box:2", "a100-80gb", 2)
    place_worker(api, "h100-box:1", "h100", 8, silent_seconds=3600)

    text = scrape(api)
    assert {status: value(text, "finetune_workers", gpu_type="a100-80gb", status=status)
            for status in ("idle", "busy", "offline")} == {"idle": 1, "busy": 1, "offline": 0}
    assert value(text, "finetune_workers", gpu_type="h100", status="offline") == 1
    assert value(text, "finetune_worker_devices", gpu_type="a100-80gb") == 4
    # A silent worker's devices are not offered.
    assert value(text, "finetune_worker_devices", gpu_type="h100") == 0


def test_a_job_run_shows_in_throughput_attempts_waits_and_durations(api: TestClient,
                                                                    tmp_path: Path) -> None:
    job_id, never_started = submit(api, tmp_path / "run"), submit(api, tmp_path / "cancelled")
    factory = api.app.state.session_factory
    with transaction(factory) as session:
        # Submitted 1,100 s ago, first started 400 s ago: it waited 700 s.
        session.execute(update(Job).where(Job.id == job_id)
                        .values(created_at=utcnow() - timedelta(seconds=1100)))
        lease = lifecycle.claim(session, job_id, "host-1:1", "host-1", 60.0)
        assert lease is not None
        session.execute(update(Job).where(Job.id == job_id)
                        .values(started_at=utcnow() - timedelta(seconds=400)))
        lifecycle.add_event(session, job_id, "telemetry", "training on cpu",
                            {"device": "cpu", "precision": "fp32"})
        lifecycle.report_progress(session, job_id, lease.attempt, step=5, total_steps=10,
                                  epoch=0.5, eta_seconds=3.0, latest={"train": {
                                      "loss": 0.7, "samples_per_second": 12.5,
                                      "tokens_per_second": 800.0, "peak_memory_bytes": 2e9}})

    running = scrape(api)
    labels = {"job_id": job_id, "project": "team-a", "task": TASK, "device": "cpu"}
    assert value(running, "finetune_job_samples_per_second", **labels) == 12.5
    assert value(running, "finetune_job_tokens_per_second", **labels) == 800.0
    assert value(running, "finetune_job_peak_memory_bytes", **labels) == 2e9
    assert value(running, "finetune_jobs_started_last_hour", task=TASK) == 1
    for quantile in ("0.5", "0.9", "0.99"):
        assert 699 < value(running, "finetune_job_queue_wait_seconds", task=TASK,
                           quantile=quantile) < 702

    def finish() -> None:
        with transaction(factory) as session:
            assert lifecycle.succeed(session, lease, {"eval_accuracy": 1.0}, 400.0)
        assert api.post(f"/v1/jobs/{never_started}/cancel").status_code == 200

    delta = change(api, finish)
    assert delta("finetune_job_attempts_total", outcome="succeeded") == 1
    finished = scrape(api)
    assert job_id not in finished  # running jobs only
    assert value(finished, "finetune_jobs_finished_last_hour", task=TASK,
                 status="succeeded") == 1
    assert value(finished, "finetune_jobs_finished_last_hour", task=TASK,
                 status="cancelled") == 1
    assert 399 < value(finished, "finetune_job_duration_seconds", task=TASK,
                       status="succeeded", quantile="0.5") < 402
    durations = [sample.labels for family in text_string_to_metric_families(finished)
                 for sample in family.samples if sample.name == "finetune_job_duration_seconds"]
    assert {labels["status"] for labels in durations} == {"succeeded"}  # the other never ran


def test_quantiles_interpolate_between_ranks(api: TestClient, tmp_path: Path) -> None:
    jobs = [submit(api, tmp_path / str(number)) for number in range(3)]
    with transaction(api.app.state.session_factory) as session:
        for waited, job_id in zip((10, 20, 60), jobs, strict=True):
            lifecycle.claim(session, job_id, "host-1:1", "host-1", 60.0)
            session.execute(update(Job).where(Job.id == job_id).values(
                created_at=utcnow() - timedelta(seconds=waited + 5),
                started_at=utcnow() - timedelta(seconds=5)))
    text = scrape(api)
    assert value(text, "finetune_jobs_started_last_hour", task=TASK) == 3
    expected = {"0.5": 20.0, "0.9": 52.0, "0.99": 59.2}
    for quantile, seconds in expected.items():
        assert value(text, "finetune_job_queue_wait_seconds", task=TASK,
                     quantile=quantile) == pytest.approx(seconds, abs=0.01)


def test_without_a_token_only_this_machine_may_scrape(api: TestClient) -> None:
    remote = TestClient(api.app, client=("10.0.0.5", 1234))
    assert_error(remote.get("/metrics"), 403, "loopback_only")
    # A project's API key is no way in.
    assert_error(api.get("/metrics"), 403, "loopback_only")
    assert local_scraper(api).get("/metrics").status_code == 200


def test_with_a_token_everyone_needs_it(api: TestClient) -> None:
    settings = api.app.state.settings
    api.app.state.settings = settings.model_copy(update={"metrics_token": SecretStr(TOKEN)})
    remote = TestClient(api.app, client=("10.0.0.5", 1234))
    for client, headers in ((remote, {}), (remote, {"Authorization": "Bearer wrong-token"}),
                            (remote, {"Authorization": TOKEN}), (api, {}),
                            (local_scraper(api), {})):
        response = client.get("/metrics", headers=headers)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    response = remote.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert value(response.text, "finetune_database_up") == 1


def test_a_short_token_is_refused() -> None:
    with pytest.raises(ValidationError, match="metrics_token"):
        Settings(metrics_token="short")


def test_without_the_database_the_request_figures_are_still_served(api: TestClient) -> None:
    api.app.state.session_factory = sessionmaker(
        bind=create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    text = scrape(api)
    assert value(text, "finetune_database_up") == 0
    assert value(text, "finetune_http_requests_total", route="/metrics", method="GET",
                 status="200") >= 1
    assert "finetune_jobs" not in text


@pytest.mark.postgres
def test_two_api_processes_add_up(tmp_path: Path, model_catalog: Path) -> None:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    (folder / "counter_1.db").write_bytes(b"a previous run's counts")
    reset_multiprocess_dir(folder)
    assert not list(folder.iterdir())
    log = tmp_path / "api.log"
    with postgres_database() as url:
        migrate.upgrade(url)
        env = service_env({"FT_DATABASE_URL": url, "FT_STORAGE_DIR": str(tmp_path / "storage"),
                           "FT_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}",
                           "FT_MODELS_DIR": str(model_catalog), MULTIPROCESS_ENV: str(folder)})
        port = free_port()
        with log.open("ab") as stream:
            server = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
                 "--workers", "2", "--host", "127.0.0.1", "--port", str(port)],
                env=env, cwd=tmp_path, stdout=stream, stderr=subprocess.STDOUT,
                start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base, timeout=30) as client:
                wait_ready(client, server, log)
            sent = 0
            # Fresh connections, many at once, until both processes have answered some.
            with ThreadPoolExecutor(8) as pool:
                while len(list(folder.glob("counter_*.db"))) < 2 and sent < 800:
                    statuses = list(pool.map(lambda _: httpx.get(f"{base}/healthz").status_code,
                                             range(40)))
                    assert statuses == [200] * 40
                    sent += 40
            assert len(list(folder.glob("counter_*.db"))) == 2, log.read_text()[-3000:]
            for _ in range(4):  # whichever process answers the scrape
                text = httpx.get(f"{base}/metrics").text
                assert value(text, "finetune_http_requests_total", route="/healthz",
                             method="GET", status="200") == sent
                assert value(text, "finetune_database_up") == 1
        finally:
            stop(server)


def test_webhook_deliveries_are_counted_by_status(api: TestClient, tmp_path: Path) -> None:
    admin = {"Authorization": f"Bearer {create_key(api.app, 'team-a', admin=True)}"}
    # A name that resolves nowhere is taken at registration; the dispatcher checks it later.
    registered = api.post("/v1/webhooks", headers=admin, json={
        "url": "https://hooks.example.invalid/finetune", "event_types": ["job.queued"]})
    assert registered.status_code == 201, registered.text
    before = value(scrape(api), "finetune_webhook_deliveries", status="pending")
    submit(api, tmp_path / "job")
    text = scrape(api)
    assert value(text, "finetune_webhook_deliveries", status="pending") == before + 1
