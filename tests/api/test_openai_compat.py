"""The OpenAI-compatible surface, driven by the official `openai` SDK, unchanged: its requests
go to the app in this process (the SDK's own HTTP client, over the same in-process transport
as the other API tests), on the real databases. Training itself is the e2e test's; here a job
progresses as the worker writes it (lifecycle operations, metric points, checkpoints)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from fastapi.testclient import TestClient
from openai import OpenAI

from app.config import Settings
from app.db import commit
from app.jobs import lifecycle
from app.models import Checkpoint, MetricPoint
from tests.api.helpers import move_job, sentiment_dataset
from tests.conftest import TINY_GPT2
from tests.layout_files import write_jsonl
from tests.openai_app import COLOURS, chats, routes_of

JSON_CAP = 8192


def in_process(api: TestClient) -> httpx2.BaseTransport:
    """The SDK's requests handed to the app as the test client hands its own."""
    def send(request: httpx2.Request) -> httpx2.Response:
        answer = api.request(request.method, str(request.url), content=request.read(),
                             headers=dict(request.headers))
        return httpx2.Response(answer.status_code, headers=answer.headers.multi_items(),
                               content=answer.content)

    return httpx2.MockTransport(send)


def sdk_client(api: TestClient, key: str) -> OpenAI:
    return OpenAI(base_url="http://testserver/v1", api_key=key, max_retries=0,
                  http_client=httpx2.Client(transport=in_process(api)))


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """JSON bodies capped well below the uploads: a file streams under its own limit."""
    return settings.model_copy(update={"max_json_bytes": JSON_CAP})


@pytest.fixture
def client(api: TestClient) -> OpenAI:
    return sdk_client(api, api.headers["Authorization"].removeprefix("Bearer "))


def upload(client: OpenAI, path: Path) -> Any:
    with path.open("rb") as stream:
        return client.files.create(file=(path.name, stream), purpose="fine-tune")


@pytest.fixture
def chat_file(client: OpenAI, tmp_path: Path) -> Any:
    return upload(client, write_jsonl(tmp_path / "chat.jsonl", chats(12)))


def supervised(**hyperparameters: Any) -> dict[str, Any]:
    return {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}


def test_a_file_is_a_dataset(client: OpenAI, api: TestClient, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", chats(12, system=True))
    created = upload(client, path)
    assert created.id.startswith("ds_") and created.object == "file"
    assert (created.purpose, created.status, created.filename) == ("fine-tune", "processed",
                                                                   "chat.jsonl")
    assert created.bytes == path.stat().st_size
    assert client.files.retrieve(created.id) == created
    assert api.get(f"/v1/datasets/{created.id}").json()["layout"] == "openai-chat"
    stored = [json.loads(line) for line in client.files.content(created.id).text.splitlines()]
    assert stored == chats(12, system=True)

    later = [upload(client, write_jsonl(tmp_path / f"more-{n}.jsonl", chats(4))) for n in (1, 2)]
    first_page = client.files.list(limit=2)
    assert first_page.has_more is True
    listed = [file.id for file in client.files.list(limit=2)]  # auto-pagination: two pages
    assert listed == [later[1].id, later[0].id, created.id]

    job = client.fine_tuning.jobs.create(model=TINY_GPT2, training_file=created.id)
    with pytest.raises(openai.ConflictError) as in_use:
        client.files.delete(created.id)
    assert in_use.value.code == "dataset_in_use" and job.id in in_use.value.message
    client.fine_tuning.jobs.cancel(job.id)
    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (created.id, True, "file")
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)


def test_a_file_streams_past_the_json_body_cap(client: OpenAI, tmp_path: Path) -> None:
    """Needs ("POST", "/v1/files") among BodySizeLimit's streamed routes (app/main.py)."""
    path = write_jsonl(tmp_path / "big.jsonl", chats(400))
    assert path.stat().st_size > 4 * JSON_CAP
    assert upload(client, path).bytes == path.stat().st_size


def test_other_purposes_and_unknown_ids_are_refused(client: OpenAI, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "batch.jsonl", chats(2))
    with pytest.raises(openai.BadRequestError) as refused, path.open("rb") as stream:
        client.files.create(file=stream, purpose="batch")
    assert (refused.value.code, refused.value.param) == ("unsupported_purpose", "purpose")
    assert refused.value.type == "invalid_request_error"
    assert "'fine-tune'" in refused.value.message
    no_answer = write_jsonl(tmp_path / "no-answer.jsonl",
                            [{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(openai.BadRequestError) as invalid:
        upload(client, no_answer)
    assert (invalid.value.code, invalid.value.param) == ("dataset_invalid_chat", "file")
    assert "Record 1" in invalid.value.message
    for call in (client.files.retrieve, client.files.content, client.files.delete,
                 client.fine_tuning.jobs.retrieve, client.fine_tuning.jobs.cancel):
        with pytest.raises(openai.NotFoundError):
            call("file-abc123")
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("not an id")


def test_a_job_is_a_causal_lm_job(client: OpenAI, api: TestClient, chat_file: Any,
                                  tmp_path: Path) -> None:
    validation = upload(client, write_jsonl(tmp_path / "valid.jsonl", chats(4)))
    job = client.fine_tuning.jobs.create(
        model=TINY_GPT2, training_file=chat_file.id, validation_file=validation.id,
        method=supervised(n_epochs=2, batch_size=4, learning_rate_multiplier=2),
        suffix="colours", seed=7, metadata={"team": "vision", "run": "a b.c"})

    assert (job.object, job.status, job.model) == ("fine_tuning.job", "queued", TINY_GPT2)
    assert (job.training_file, job.validation_file) == (chat_file.id, validation.id)
    assert (job.hyperparameters.n_epochs, job.hyperparameters.batch_size,
            job.hyperparameters.learning_rate_multiplier) == (2, 4, 2.0)
    assert job.method.type == "supervised"
    assert job.method.supervised.hyperparameters.model_dump() == job.hyperparameters.model_dump()
    assert (job.seed, job.metadata) == (7, {"team": "vision", "run": "a b.c"})
    assert job.fine_tuned_model is None and job.trained_tokens is None
    assert job.result_files == [] and job.error is None and job.estimated_finish is None
    assert isinstance(job.created_at, int) and job.organization_id
    assert client.fine_tuning.jobs.retrieve(job.id) == job

    native = api.get(f"/v1/jobs/{job.id}").json()
    assert native["name"] == "colours"
    spec = native["spec"]
    assert spec["task"] == "causal-lm" and spec["model"] == TINY_GPT2
    assert spec["dataset"]["messages_column"] == "messages"
    assert spec["dataset"]["validation"] == validation.id
    assert spec["hyperparameters"]["learning_rate"] == pytest.approx(4e-5)
    assert (spec["hyperparameters"]["epochs"], spec["hyperparameters"]["batch_size"],
            spec["hyperparameters"]["seed"]) == (2, 4, 7)
    assert spec["checkpoint_steps"] == 3  # one checkpoint an epoch: 12 rows, 4 a batch


def test_auto_hyperparameters_are_resolved(client: OpenAI, api: TestClient,
                                           tmp_path: Path) -> None:
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": f"what colour are {topic} ?", "completion": f" {colour}"}
        for topic, colour in list(COLOURS.items()) * 2 + list(COLOURS.items())[:2]])
    job = client.fine_tuning.jobs.create(
        model=TINY_GPT2, training_file=upload(client, pairs).id,
        hyperparameters={"n_epochs": "auto", "batch_size": "auto"})
    # 10 rows: 100 // 10 epochs, a batch of all of them, the base learning rate.
    assert (job.hyperparameters.n_epochs, job.hyperparameters.batch_size,
            job.hyperparameters.learning_rate_multiplier) == (10, 10, 1.0)
    assert job.seed == 42 and job.metadata is None
    native = api.get(f"/v1/jobs/{job.id}").json()["spec"]
    assert native["dataset"]["prompt_column"] == "prompt"
    assert native["hyperparameters"]["learning_rate"] == pytest.approx(2e-5)
    events = api.get(f"/v1/jobs/{job.id}/events").json()["data"]
    [note] = [event for event in events if event["kind"] == "openai_request"]
    assert "n_epochs 10 (auto)" in note["message"]
    assert note["data"]["requested"]["n_epochs"] == "auto"


@pytest.mark.parametrize(("request_fields", "code", "param", "words"), [
    ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}},
     "unsupported_method", "method.type", "dpo"),
    ({"method": {"type": "reinforcement"}}, "unsupported_method", "method.type",
     "reinforcement"),
    ({"integrations": [{"type": "wandb", "wandb": {"project": "p"}}]},
     "unsupported_parameter", "integrations", "Weights & Biases"),
    ({"model": "gpt-4o-mini-2024-07-18"}, "unsupported_model", "model", "OpenAI-hosted"),
    ({"model": f"ft:{TINY_GPT2}::job_0"}, "unsupported_model", "model", "fine-tuned model"),
    ({"training_file": "file-abc123"}, "file_not_found", "training_file", "file-abc123"),
    ({"validation_file": "ds_missing"}, "file_not_found", "validation_file", "ds_missing"),
    ({"hyperparameters": {"n_epochs": 2}, "method": supervised(n_epochs=3)},
     "invalid_request", "hyperparameters", "once"),
    ({"method": supervised(n_epochs=0)}, "invalid_request",
     "method.supervised.hyperparameters.n_epochs", "n_epochs must be 'auto' or an integer"),
    ({"hyperparameters": {"learning_rate_multiplier": "fast"}}, "invalid_request",
     "hyperparameters.learning_rate_multiplier", "a number above 0"),
    ({"suffix": "has:colon"}, "invalid_request", "suffix", "pattern"),
    ({"metadata": {str(n): "v" for n in range(17)}}, "invalid_request", "metadata", "16"),
])
def test_what_the_service_cannot_do_is_refused(client: OpenAI, chat_file: Any,
                                               request_fields: dict[str, Any], code: str,
                                               param: str, words: str) -> None:
    fields = {"model": TINY_GPT2, "training_file": chat_file.id, **request_fields}
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(**fields)
    assert (refused.value.code, refused.value.param) == (code, param), refused.value.body
    assert words in refused.value.message


def test_plain_tables_and_mismatched_files_are_refused(client: OpenAI, api: TestClient,
                                                       chat_file: Any, tmp_path: Path) -> None:
    table = sentiment_dataset(api, tmp_path)
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(model=TINY_GPT2, training_file=table["id"])
    assert (refused.value.code, refused.value.param) == ("unsupported_file_layout",
                                                         "training_file")
    assert '"messages"' in refused.value.message and '"completion"' in refused.value.message
    pairs = upload(client, write_jsonl(tmp_path / "pairs.jsonl",
                                       [{"prompt": "a", "completion": "b"}] * 3))
    with pytest.raises(openai.BadRequestError) as mismatched:
        client.fine_tuning.jobs.create(model=TINY_GPT2, training_file=chat_file.id,
                                       validation_file=pairs.id)
    assert mismatched.value.param == "validation_file"
    with pytest.raises(openai.BadRequestError) as unknown_field:
        client.fine_tuning.jobs.create(model=TINY_GPT2, training_file=chat_file.id,
                                       extra_body={"learning_rate": 1.0})
    assert unknown_field.value.code == "unknown_field"


def test_jobs_list_newest_first_across_pages(client: OpenAI, chat_file: Any) -> None:
    created = [client.fine_tuning.jobs.create(model=TINY_GPT2, training_file=chat_file.id,
                                              metadata={"run": str(n)}) for n in range(3)]
    first = client.fine_tuning.jobs.list(limit=2)
    assert first.has_more is True and len(first.data) == 2
    listed = [job.id for job in client.fine_tuning.jobs.list(limit=2)]
    assert listed == [job.id for job in reversed(created)]
    [only] = client.fine_tuning.jobs.list(metadata={"run": "1"}).data
    assert only.id == created[1].id
    dotted = client.fine_tuning.jobs.create(model=TINY_GPT2, training_file=chat_file.id,
                                            metadata={"team.name x": "it's"})
    assert [job.id for job in client.fine_tuning.jobs.list(
        metadata={"team.name x": "it's"})] == [dotted.id]
    assert client.fine_tuning.jobs.list(metadata={"run": "9"}).data == []


def test_cancel(client: OpenAI, api: TestClient, chat_file: Any) -> None:
    queued = client.fine_tuning.jobs.create(model=TINY_GPT2, training_file=chat_file.id)
    assert client.fine_tuning.jobs.cancel(queued.id).status == "cancelled"
    assert client.fine_tuning.jobs.cancel(queued.id).status == "cancelled"

    running = client.fine_tuning.jobs.create(model=TINY_GPT2, training_file=chat_file.id)
    move_job(api, running.id, lifecycle.QUEUED, lifecycle.RUNNING)
    # Cancelling until the worker stops it: still running, in OpenAI's words.
    assert client.fine_tuning.jobs.cancel(running.id).status == "running"
    assert api.get(f"/v1/jobs/{running.id}").json()["status"] == "cancelling"

    done = client.fine_tuning.jobs.create(model=TINY_GPT2, training_file=chat_file.id)
    move_job(api, done.id, lifecycle.QUEUED, lifecycle.SUCCEEDED)
    with pytest.raises(openai.ConflictError) as refused:
        client.fine_tuning.jobs.cancel(done.id)
    assert refused.value.code == "job_already_finished"
    assert refused.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.pause(done.id)


def train_as_the_worker_does(api: TestClient, job_id: str) -> None:
    """Six steps, a loss logged at each, evaluations and checkpoints at 3 and 6, success."""
    with api.app.state.session_factory() as session:
        lease = lifecycle.claim(session, job_id, "worker-1", "host-1", 60)
        assert lease is not None
        for step in range(1, 7):
            session.add_all([MetricPoint(job_id=job_id, step=step, epoch=step / 3, name=name,
                                         value=value) for name, value in (
                ("loss", 3.0 - step / 10), ("learning_rate", 1e-4), ("grad_norm", 1.5))])
            if step % 3 == 0:
                session.add_all([
                    MetricPoint(job_id=job_id, step=step, epoch=step / 3, name="eval_loss",
                                value=2.0 - step / 10),
                    MetricPoint(job_id=job_id, step=step, epoch=step / 3, name="eval_runtime",
                                value=0.01),
                    Checkpoint(job_id=job_id, step=step, files={})])
                lifecycle.add_event(session, job_id, "evaluation", f"Evaluation at step {step}",
                                    {"step": step, "epoch": step / 3,
                                     "metrics": {"eval_loss": 2.0 - step / 10}})
            lifecycle.report_progress(session, job_id, lease.attempt, step=step, total_steps=6,
                                      epoch=step / 3, eta_seconds=1.0, latest={})
            commit(session)
        assert lifecycle.succeed(session, lease, {"num_input_tokens_seen": 540}, 3.0)
        commit(session)


def test_events_checkpoints_and_result_file(client: OpenAI, api: TestClient,
                                            chat_file: Any) -> None:
    job = client.fine_tuning.jobs.create(model=TINY_GPT2, training_file=chat_file.id,
                                         suffix="colours")
    train_as_the_worker_does(api, job.id)

    finished = client.fine_tuning.jobs.retrieve(job.id)
    assert finished.status == "succeeded" and finished.finished_at is not None
    assert finished.fine_tuned_model == f"ft:{TINY_GPT2}:colours:{job.id}"
    assert finished.trained_tokens == 540
    assert finished.result_files == [f"file-result-{job.id}"]

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=4))  # auto-pagination
    native = api.get(f"/v1/jobs/{job.id}/events").json()["data"]
    assert len(events) == len(native) + 6 == len({event.id for event in events})
    assert [event.created_at for event in events] == sorted(
        (event.created_at for event in events), reverse=True)
    assert events[0].message == "Job succeeded" and events[-1].message == "Job queued"
    losses = [event for event in events if event.message.startswith("Step ")]
    assert losses[0].message == "Step 6/6: training loss=2.4000"
    assert losses[0].type == "metrics" and losses[0].data["train_loss"] == pytest.approx(2.4)
    evaluation = next(event for event in events if event.message == "Evaluation at step 6")
    assert evaluation.type == "metrics" and evaluation.data["valid_loss"] == pytest.approx(1.4)
    assert any(event.data.get("kind") == "openai_request" for event in events)

    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id, limit=1))
    assert [checkpoint.step_number for checkpoint in checkpoints] == [6, 3]
    latest = checkpoints[0]
    assert latest.object == "fine_tuning.job.checkpoint" and latest.fine_tuning_job_id == job.id
    assert latest.fine_tuned_model_checkpoint == f"{finished.fine_tuned_model}:ckpt-step-6"
    assert latest.metrics.train_loss == pytest.approx(2.4)
    assert latest.metrics.valid_loss == pytest.approx(1.4)

    result = client.files.retrieve(finished.result_files[0])
    assert (result.purpose, result.filename) == ("fine-tune-results", "step_metrics.csv")
    content = client.files.content(result.id).text
    assert result.bytes == len(content.encode())
    rows = list(csv.DictReader(io.StringIO(content)))
    assert [int(row["step"]) for row in rows] == [1, 2, 3, 4, 5, 6]
    assert [float(row["train_loss"]) for row in rows] == pytest.approx(
        [3.0 - step / 10 for step in range(1, 7)])
    assert [row["valid_loss"] != "" for row in rows] == [False, False, True] * 2
    assert "valid_runtime" not in rows[0]
    listed = client.files.list(purpose="fine-tune-results")
    assert [file.id for file in listed] == [result.id]
    with pytest.raises(openai.BadRequestError):
        client.files.delete(result.id)


def test_errors_use_openai_envelope(client: OpenAI, api: TestClient, chat_file: Any) -> None:
    with pytest.raises(openai.AuthenticationError) as unauthenticated:
        sdk_client(api, "ftk_notakey").fine_tuning.jobs.list()
    assert unauthenticated.value.code == "invalid_api_key"
    for query, code, param in (("limit=0", "invalid_request", "limit"),
                               ("stauts=running", "unknown_field", "stauts"),
                               ("after=job_unknown", "invalid_request", "after")):
        response = api.get(f"/v1/fine_tuning/jobs?{query}")
        assert response.status_code == 400, response.text
        assert response.json() == {"error": {"message": response.json()["error"]["message"],
                                             "type": "invalid_request_error", "param": param,
                                             "code": code}}
    job = client.fine_tuning.jobs.create(model=TINY_GPT2, training_file=chat_file.id)
    for listing in ("events", "checkpoints"):
        for cursor in ("ftevent-9999999999", "ftckpt-9999999999", "ftevent-m12345678901", "x"):
            answer = api.get(f"/v1/fine_tuning/jobs/{job.id}/{listing}?after={cursor}")
            assert answer.status_code == 400 and answer.json()["error"]["param"] == "after"
    # metadata[...] filters only where OpenAI takes them.
    assert api.get("/v1/files?metadata[a]=b").json()["error"]["code"] == "unknown_field"
    assert api.get('/v1/fine_tuning/jobs?metadata[a"b]=c').json()["error"]["code"] \
        == "unknown_field"
    nul = api.get("/v1/fine_tuning/jobs?metadata[a]=b%00").json()["error"]
    assert (nul["code"], nul["param"]) == ("invalid_request", "metadata[a]")
    with pytest.raises(openai.BadRequestError):
        client.files.list(order="asc")


def test_new_routes_do_not_clash(client: OpenAI, api: TestClient) -> None:
    served = [(method, route.path) for route in routes_of(api.app)
              for method in getattr(route, "methods", None) or ()]
    assert len(served) == len(set(served))
    new = {path for _, path in served if path.startswith(("/v1/files", "/v1/fine_tuning"))}
    native = {route.path for route in routes_of(api.app)
              if getattr(route, "endpoint", None) is not None
              and route.endpoint.__module__ != "app.openai_compat.router"}
    assert new and not new & native
