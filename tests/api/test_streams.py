"""Live streams over real HTTP (uvicorn; the TestClient would buffer them) on PostgreSQL.

Events, metric points and status changes are written the way the worker writes them, through
the lifecycle's operations, while real clients read the streams.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import migrate
from app.client.sse import EventStreamParser, ServerSentEvent
from app.config import Settings
from app.db import transaction
from app.jobs import lifecycle
from app.main import create_app
from app.models import JobEvent, MetricPoint
from app.streams.hub import StreamHub
from app.streams.reads import EVENT_STATUS
from tests.api.helpers import submit_a_job
from tests.conftest import create_key, postgres_database
from tests.e2e.service import free_port

HEARTBEAT_SECONDS = 0.3
QUEUE_LIMIT = 8


@dataclass
class Served:
    base: str
    app: FastAPI
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def write(self, work: Callable[[Session], Any]) -> Any:
        """One transaction of the service's database, committed, as the worker writes."""
        with transaction(self.app.state.session_factory) as session:
            return work(session)

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=httpx.Timeout(10.0),
                            headers={"Authorization": f"Bearer {key or self.key}"})


@pytest.fixture
def served(tmp_path: Path, model_catalog: Path) -> Iterator[Served]:
    """The API on PostgreSQL behind uvicorn, its hub polling fast with short heartbeats."""
    with postgres_database() as url:
        migrate.upgrade(url)
        settings = Settings(database_url=url,
                            broker_url=f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}",
                            storage_dir=tmp_path / "storage", models_dir=model_catalog,
                            api_db_connections=4)
        app = create_app(settings)
        app.state.stream_hub = StreamHub(url, poll_seconds=0.1,
                                         heartbeat_seconds=HEARTBEAT_SECONDS,
                                         queue_limit=QUEUE_LIMIT)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(),
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            yield Served(f"http://127.0.0.1:{server.config.port}", app, create_key(app, "team-a"))
        finally:
            server.should_exit = True
            thread.join(timeout=30)


@dataclass
class Stream:
    """A client reading one stream, block by block, keeping its raw lines."""

    response: httpx.Response
    parser: EventStreamParser = field(default_factory=EventStreamParser)
    raw: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lines = self.response.iter_lines()

    def next(self) -> ServerSentEvent:
        for line in self._lines:
            self.raw.append(line)
            block = self.parser.feed(line)
            if block is not None:
                return block
        raise AssertionError("the stream ended")

    def messages(self, count: int) -> list[ServerSentEvent]:
        """The next `count` messages, heartbeats skipped."""
        found: list[ServerSentEvent] = []
        while len(found) < count:
            if (block := self.next()).event is not None:
                found.append(block)
        return found

    def until_end(self) -> list[ServerSentEvent]:
        found: list[ServerSentEvent] = []
        while not found or found[-1].event != "end":
            if (block := self.next()).event is not None:
                found.append(block)
        with pytest.raises(AssertionError, match="ended"):
            self.next()  # closed after `end`
        return found


def open_stream(client: httpx.Client, path: str, **headers: str) -> Any:
    return client.stream("GET", path, params={"stream": "true"}, headers=headers)


def claim(served: Served, job_id: str) -> lifecycle.Lease:
    lease = served.write(lambda session: lifecycle.claim(session, job_id, "worker-1", "host-1", 60))
    assert lease is not None
    return lease


def log_metrics(served: Served, lease: lifecycle.Lease, step: int) -> None:
    """A training log: two metric points and the progress, in one transaction."""
    def write(session: Session) -> None:
        session.add_all([MetricPoint(job_id=lease.job_id, step=step, epoch=step / 10,
                                     name=name, value=value / step)
                         for name, value in (("loss", 1.0), ("learning_rate", 0.1))])
        lifecycle.report_progress(session, lease.job_id, lease.attempt, step=step,
                                  total_steps=10, epoch=step / 10, eta_seconds=5.0,
                                  latest={"train": {"loss": 1.0 / step}})
    served.write(write)


def add_event(served: Served, job_id: str, kind: str) -> None:
    served.write(lambda session: lifecycle.add_event(session, job_id, kind, f"{kind} happened",
                                                     {"kind": kind}))


def stored(served: Served, job_id: str) -> tuple[list[int], list[tuple[str, int]]]:
    """The job's event ids and its metric points' (name, step), in id order."""
    def read(session: Session) -> tuple[list[int], list[tuple[str, int]]]:
        events = session.scalars(select(JobEvent.id).where(JobEvent.job_id == job_id)
                                 .order_by(JobEvent.id)).all()
        points = session.execute(select(MetricPoint.name, MetricPoint.step)
                                 .where(MetricPoint.job_id == job_id)
                                 .order_by(MetricPoint.id)).all()
        return list(events), [tuple(point) for point in points]
    return served.write(read)


def received(blocks: list[ServerSentEvent]) -> tuple[list[int], list[tuple[str, int]]]:
    events = [json.loads(b.data)["id"] for b in blocks if b.event == "event"]
    points = [(json.loads(b.data)["name"], json.loads(b.data)["step"])
              for b in blocks if b.event == "metric"]
    return events, points


@pytest.mark.postgres
def test_every_event_and_metric_once_across_a_reconnect(served: Served, tmp_path: Path) -> None:
    job_id = submit_a_job(served.base, served.headers, tmp_path)
    path = f"/v1/jobs/{job_id}/events"
    with served.client() as client:
        with open_stream(client, path) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            first = Stream(response)
            queued = first.messages(1)
            assert queued[0].event == "event" and json.loads(queued[0].data)["kind"] == "queued"
            lease = claim(served, job_id)
            for step in (1, 2):
                log_metrics(served, lease, step)
            add_event(served, job_id, "evaluation")
            # Dropped after part of what was written: the rest comes after the reconnect.
            before = queued + first.messages(3)
        last_id = before[-1].last_id
        assert last_id is not None
        log_metrics(served, lease, 3)
        add_event(served, job_id, "epoch")
        with open_stream(client, path, **{"Last-Event-ID": last_id}) as response:
            second = Stream(response)
            caught_up = second.messages(1)
            served.write(lambda session: lifecycle.succeed(session, lease, {"loss": 0.1}, 1.0))
            after = caught_up + second.until_end()
        page = client.get(path).json()["data"]
    blocks = before + after
    assert received(blocks) == stored(served, job_id)
    # Each message moves the cursor on; `end` repeats the last one.
    ids = [tuple(map(int, str(b.last_id).split("."))) for b in blocks]
    assert ids[:-1] == sorted(set(ids)) and ids[-1] == ids[-2]
    # The same JSON as the paginated answer.
    assert [json.loads(b.data) for b in blocks if b.event == "event"] == page
    assert blocks[-1].event == "end"
    assert json.loads(blocks[-1].data) == {"job_id": job_id, "status": "succeeded"}


@pytest.mark.postgres
def test_a_row_committed_late_is_not_skipped(served: Served, tmp_path: Path) -> None:
    """Ids are taken at insert, not at commit: the stream waits for the transaction that
    holds the lower id instead of going past it."""
    job_id = submit_a_job(served.base, served.headers, tmp_path)
    with served.client() as client, open_stream(client, f"/v1/jobs/{job_id}/events") as response:
        stream = Stream(response)
        stream.messages(1)  # queued
        slow = served.app.state.session_factory()
        try:
            lifecycle.add_event(slow, job_id, "slow", "took the lower id", {})
            slow.flush()
            add_event(served, job_id, "fast")  # the higher id, committed first
            time.sleep(5 * HEARTBEAT_SECONDS)
            quiet = [stream.next() for _ in range(3)]
            assert all(block.event is None for block in quiet), quiet
            slow.commit()
        finally:
            slow.close()
        kinds = [json.loads(block.data)["kind"] for block in stream.messages(2)]
    assert kinds == ["slow", "fast"]


@pytest.mark.postgres
def test_heartbeats_and_the_end_of_a_finished_job(served: Served, tmp_path: Path) -> None:
    job_id = submit_a_job(served.base, served.headers, tmp_path)
    path = f"/v1/jobs/{job_id}/events"
    with served.client() as client:
        with open_stream(client, path) as response:
            stream = Stream(response)
            stream.messages(1)
            started = time.monotonic()
            while stream.raw.count(": keep-alive") < 3:
                stream.next()
            assert time.monotonic() - started < 10 * HEARTBEAT_SECONDS
            assert stream.raw[0] == "retry: 2000"
            assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
            ending = stream.until_end()
        assert [b.event for b in ending] == ["event", "end"]
        assert json.loads(ending[0].data)["kind"] == "cancelled"
        # A job that has ended: everything after the cursor, then `end`, at once.
        with open_stream(client, path) as response:
            whole = Stream(response).until_end()
        assert [json.loads(b.data)["kind"] for b in whole[:-1]] == ["queued", "cancelled"]
        with open_stream(client, path, **{"Last-Event-ID": ending[-1].last_id}) as response:
            again = Stream(response).until_end()
        assert [b.event for b in again] == ["end"]
        assert json.loads(again[0].data)["status"] == "cancelled"
        after_first = client.get(path, params={"limit": 1}).json()["data"][0]["id"]
        with client.stream("GET", path, params={"stream": "true", "after": after_first}) as rest:
            assert [b.event for b in Stream(rest).until_end()] == ["event", "end"]


@pytest.mark.postgres
def test_another_projects_job_and_bad_cursors_are_refused(served: Served,
                                                          tmp_path: Path) -> None:
    job_id = submit_a_job(served.base, served.headers, tmp_path)
    path = f"/v1/jobs/{job_id}/events"
    with served.client(create_key(served.app, "team-b")) as other:
        answer = other.get(path, params={"stream": "true"})
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["error"]["code"] == "not_found"
    with served.client() as client:
        for bad in ("1.x", "1.2.3", ".5", "9999999999.0"):
            answer = client.get(path, params={"stream": "true"}, headers={"Last-Event-ID": bad})
            assert answer.status_code == 422, bad
            assert answer.json()["error"]["param"] == "Last-Event-ID"
        answer = client.get("/v1/jobs", params={"stream": "true"},
                            headers={"Last-Event-ID": "1.0"})
        assert answer.status_code == 422
        answer = client.get("/v1/jobs", params={"stream": "true", "after": job_id})
        assert answer.status_code == 422 and answer.json()["error"]["param"] == "after"
        assert client.get(path, params={"stream": "false"}).json()["data"][0]["kind"] == "queued"
        assert client.get(path, params={"unknown": "1"}).status_code == 422


@pytest.mark.postgres
def test_the_jobs_stream_sees_its_projects_status_changes(served: Served,
                                                          tmp_path: Path) -> None:
    other_key = create_key(served.app, "team-b")
    mine = submit_a_job(served.base, served.headers, tmp_path / "a")
    theirs = submit_a_job(served.base, {"Authorization": f"Bearer {other_key}"}, tmp_path / "b")
    with served.client() as client, served.client(other_key) as other, \
            open_stream(client, "/v1/jobs") as response, \
            open_stream(other, "/v1/jobs") as other_response, \
            client.stream("GET", "/v1/jobs", params={"stream": "true", "status": "running"}
                          ) as running_response:
        stream, other_stream = Stream(response), Stream(other_response)
        running = Stream(running_response)
        for opened in (stream, other_stream, running):
            # Live once the first heartbeat has come: it starts from now.
            while ": keep-alive" not in opened.raw:
                opened.next()
        lease = claim(served, mine)
        assert client.post(f"/v1/jobs/{mine}/cancel").status_code == 200
        blocks = stream.messages(2)
        changes = [json.loads(block.data) for block in blocks]
        assert [(c["id"], c["status"]) for c in changes] == [(mine, "running"),
                                                             (mine, "cancelling")]
        job = client.get(f"/v1/jobs/{mine}").json()
        assert changes[0]["project_id"] == job["project_id"]
        assert changes[1]["progress"] == job["progress"]
        assert json.loads(running.messages(1)[0].data)["status"] == "running"
        assert other.post(f"/v1/jobs/{theirs}/cancel").status_code == 200
        seen = other_stream.messages(1)[0]
        assert (json.loads(seen.data)["id"], seen.event) == (theirs, "job")
        served.write(lambda session: lifecycle.stop_cancelled(session, lease, 1.0))
        assert json.loads(stream.messages(1)[0].data)["status"] == "cancelled"
    # Resumed after the first change: the later ones, and none of another project's.
    assert blocks[0].last_id is not None and blocks[0].last_id.isdigit()
    with served.client() as client, open_stream(client, "/v1/jobs", **{
            "Last-Event-ID": blocks[0].last_id}) as response:
        resumed = Stream(response)
        again = [json.loads(block.data)["status"] for block in resumed.messages(2)]
        while ": keep-alive" not in resumed.raw:
            assert resumed.next().event is None
    assert again == ["cancelling", "cancelled"]


@pytest.mark.postgres
def test_a_client_too_far_behind_reads_again_from_the_database(served: Served,
                                                              tmp_path: Path) -> None:
    job_id = submit_a_job(served.base, served.headers, tmp_path)
    with served.client() as client, open_stream(client, f"/v1/jobs/{job_id}/events") as response:
        stream = Stream(response)
        stream.messages(1)

        def burst(session: Session) -> None:
            for number in range(5 * QUEUE_LIMIT):
                lifecycle.add_event(session, job_id, "burst", f"event {number}", {})
        served.write(burst)
        messages = [json.loads(block.data)["message"]
                    for block in stream.messages(5 * QUEUE_LIMIT)]
    assert messages == [f"event {number}" for number in range(5 * QUEUE_LIMIT)]


def test_each_status_event_names_one_status() -> None:
    for edge in lifecycle.EDGES.values():
        if edge.target is not None:
            assert EVENT_STATUS[edge.events[-1]] == edge.target, edge.name
