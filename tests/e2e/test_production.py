"""The production path: PostgreSQL, Redis, and the API and a worker as separate processes."""

from __future__ import annotations

import http.client
import itertools
import json
import select
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from transformers import pipeline

from tests.conftest import TINY_BART, TINY_GPT2, TINY_MODEL, postgres_database
from tests.e2e.flows import train_download_predict, train_with_validation
from tests.e2e.service import (
    Service,
    finetune,
    free_port,
    service_env,
    stop,
    trainer_pid,
    wait_ready,
)
from tests.factories import (
    entity_rows,
    generated_text,
    multi_label_rows,
    pickled_model,
    predicted_answer,
    qa_rows,
    sentiment_rows,
    seq2seq_rows,
    write_conll,
    write_rows,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def long_spec(dataset_id: str) -> dict[str, Any]:
    """A job that runs until it is stopped."""
    return {"task": "text-classification", "model": TINY_MODEL,
            "dataset": {"train": dataset_id}, "hyperparameters": {"max_steps": 1_000_000},
            "logging_steps": 1}


def test_api_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    with postgres_database() as url:
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", "api", "--port", "1"],
            env=service_env({"FT_DATABASE_URL": url, "FT_STORAGE_DIR": str(tmp_path)}),
            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "finetune migrate" in result.stdout + result.stderr


def test_train_download_predict(service: Service, tmp_path: Path) -> None:
    train_download_predict(service, tmp_path)


def test_failed_jobs_say_why_and_the_worker_goes_on(service: Service, tmp_path: Path) -> None:
    good = service.upload(write_rows(tmp_path / "good.csv", sentiment_rows(40)))
    one_class = service.upload(write_rows(tmp_path / "one.csv",
                                          sentiment_rows(20, labels=("positive",))))
    missing_model = service.submit({"task": "text-classification", "model": "no-such/model",
                                    "dataset": {"train": good["id"]}})
    bad_data = service.submit({"task": "text-classification", "model": TINY_MODEL,
                               "dataset": {"train": one_class["id"]}})
    after = service.submit({"task": "text-classification", "model": TINY_MODEL,
                            "dataset": {"train": good["id"]},
                            "hyperparameters": {"max_steps": 3}})
    failed = service.wait_for(missing_model["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "model_not_found"
    assert "no-such/model" in failed["error"]["message"] and failed["error"]["hint"]
    failed = service.wait_for(bad_data["id"])
    assert failed["error"]["code"] == "dataset_invalid"
    assert "one" in failed["error"]["message"].lower()
    assert service.wait_for(after["id"])["status"] == "succeeded"


def test_cancel_a_running_job(service: Service, tmp_path: Path) -> None:
    dataset = service.upload(write_rows(tmp_path / "d.csv", sentiment_rows(40)))
    job = service.submit(long_spec(dataset["id"]))
    service.wait_for(job["id"], ("running",), condition=lambda j: j["progress"]["step"] > 2)
    pid = trainer_pid(job["id"])
    assert pid is not None
    cancelling = service.client.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert cancelling["status"] in ("cancelling", "cancelled")
    cancelled = service.wait_for(job["id"], timeout=30)
    assert cancelled["status"] == "cancelled"
    assert cancelled["progress"]["step"] < 1_000_000
    assert not Path(f"/proc/{pid}").exists()
    kinds = [e["kind"] for e in service.client.get(f"/v1/jobs/{job['id']}/events").json()["data"]]
    assert "cancelling" in kinds and kinds[-1] == "cancelled"
    assert kinds.index("cancelling") < kinds.index("cancelled")


def test_raw_traversal_requests_never_leave_the_model(service: Service, tmp_path: Path) -> None:
    dataset = service.upload(write_rows(tmp_path / "d.csv", sentiment_rows(40)))
    job = service.submit({"task": "text-classification", "model": TINY_MODEL,
                          "dataset": {"train": dataset["id"]},
                          "hyperparameters": {"max_steps": 2}})
    assert service.wait_for(job["id"])["status"] == "succeeded"
    host, port = service.client.base_url.host, service.client.base_url.port
    for path in ("../trainer.log", "..%2Ftrainer.log", "%2e%2e%2ftrainer.log",
                 "..%2F..%2F..%2Fdatasets", "%2Fetc%2Fpasswd", "..\\trainer.log"):
        connection = http.client.HTTPConnection(host, port, timeout=10)
        # http.client sends the path as written: no client-side normalisation of '..'.
        connection.request("GET", f"/v1/jobs/{job['id']}/artifacts/{path}",
                           headers={"Authorization": f"Bearer {service.api_key}"})
        response = connection.getresponse()
        assert response.status == 404, (path, response.status)
        assert b'"not_found"' in response.read()
        connection.close()
    assert (service.storage_dir / "jobs" / job["id"] / "trainer.log").is_file()



def test_early_stopping_through_the_service(service: Service, tmp_path: Path) -> None:
    dataset = service.upload(write_rows(tmp_path / "d.csv", sentiment_rows(64)))
    job = service.submit({"task": "text-classification", "model": TINY_MODEL,
                          "dataset": {"train": dataset["id"], "validation_split": 0.25},
                          "hyperparameters": {"epochs": 6, "batch_size": 16},
                          "early_stopping": {"patience": 1, "threshold": 2.0}})
    finished = service.wait_for(job["id"])
    assert finished["status"] == "succeeded", finished["error"]
    best = finished["metrics"]["final"]["best_model"]
    assert best["stopped_early"] and best["step"] == 3 and best["metric"] == "eval_f1"
    assert finished["progress"]["step"] == 6  # two epochs of three steps, not six
    assert finished["progress"]["eta_seconds"] == 0.0  # not the estimate at step 6 of 18
    events = service.client.get(f"/v1/jobs/{job['id']}/events").json()["data"]
    stopped = next(event for event in events if event["kind"] == "early_stopped")
    assert "did not improve" in stopped["message"] and stopped["data"]["best_step"] == 3


def test_masked_lm_through_the_service(service: Service, tmp_path: Path) -> None:
    rows = [{"text": row["text"]} for row in sentiment_rows(120)]
    dataset = service.upload(write_rows(tmp_path / "domain.jsonl", rows))
    job = service.submit({"task": "masked-lm", "model": TINY_MODEL,
                          "dataset": {"train": dataset["id"], "validation_split": 0.2},
                          "hyperparameters": {"epochs": 2, "learning_rate": 5e-3}})
    finished = service.wait_for(job["id"])
    assert finished["status"] == "succeeded", finished["error"]
    final = finished["metrics"]["final"]
    assert final["eval_perplexity"] > 1 and "eval_loss" in final
    model = service.download_model(job["id"], tmp_path / "download")
    fill = pipeline("fill-mask", model=str(model))
    guesses = fill(f"a {fill.tokenizer.mask_token} movie")
    assert len(guesses) == 5 and all("token_str" in guess for guess in guesses)


def test_causal_lm_through_the_service(service: Service, tmp_path: Path) -> None:
    rows = [{"prompt": f"what colour are {topic} ?", "completion": f" {colour}"}
            for topic, colour in (("cats", "grey"), ("dogs", "brown")) * 40]
    dataset = service.upload(write_rows(tmp_path / "pairs.jsonl", rows))
    job = service.submit({"task": "causal-lm", "model": TINY_GPT2,
                          "dataset": {"train": dataset["id"], "validation_split": 0.1,
                                      "prompt_column": "prompt", "completion_column": "completion"},
                          "hyperparameters": {"epochs": 4, "learning_rate": 5e-3}})
    finished = service.wait_for(job["id"])
    assert finished["status"] == "succeeded", finished["error"]
    assert finished["metrics"]["final"]["eval_perplexity"] > 1
    events = service.client.get(f"/v1/jobs/{job['id']}/events").json()["data"]
    assert next(e for e in events if e["kind"] == "samples")["data"]["samples"]
    model = service.download_model(job["id"], tmp_path / "download")
    generate = pipeline("text-generation", model=str(model))
    [output] = generate("what colour are cats ?", max_new_tokens=3, do_sample=False)
    assert output["generated_text"].startswith("what colour are cats ?")


def test_token_classification_through_the_service(service: Service, tmp_path: Path) -> None:
    dataset = service.upload(write_conll(tmp_path / "tagged.conll", entity_rows(160)))
    job = service.submit({"task": "token-classification", "model": TINY_MODEL,
                          "dataset": {"train": dataset["id"], "validation_split": 0.2},
                          "hyperparameters": {"epochs": 4, "learning_rate": 5e-3}})
    finished = service.wait_for(job["id"])
    assert finished["status"] == "succeeded", finished["error"]
    assert finished["metrics"]["final"]["eval_f1"] >= 0.8
    model = service.download_model(job["id"], tmp_path / "download")
    tagger = pipeline("token-classification", model=str(model))
    assert {entity["entity"] for entity in tagger("the dogs were awful")} <= {"B-TOPIC",
                                                                             "B-MOOD"}


def test_question_answering_through_the_service(service: Service, tmp_path: Path) -> None:
    # 30 epochs: at 20, one seed in four stops at an exact match near 0.6. Only the final
    # evaluation counts here; evaluating every epoch would double the time.
    finished = train_with_validation(
        service, tmp_path, {"task": "question-answering", "model": TINY_MODEL,
                            "evaluation": {"strategy": "no"},
                            "hyperparameters": {"epochs": 30, "learning_rate": 5e-3}},
        qa_rows(300), qa_rows(60, seed=1))
    final = finished["metrics"]["final"]
    assert final["eval_exact_match"] >= 0.8 and final["eval_f1"] >= 0.8, final
    model = service.download_model(finished["id"], tmp_path / "download")
    # Words of the toy contexts in a new order: the tiny vocabulary knows few others.
    context = "the film was really about coffee and dreadful"
    assert predicted_answer(model, "what topic ?", context) == "coffee"
    assert predicted_answer(model, "what mood ?", context) == "dreadful"


def test_seq2seq_through_the_service(service: Service, tmp_path: Path) -> None:
    # 100 epochs: at 60, one seed in eight stays under a chrF of 0.7. Only the final
    # evaluation counts here; generating at every epoch would only slow it.
    finished = train_with_validation(
        service, tmp_path, {"task": "seq2seq", "model": TINY_BART,
                            "evaluation": {"strategy": "no"},
                            "hyperparameters": {"epochs": 100, "learning_rate": 5e-3,
                                                "generation_max_length": 10}},
        seq2seq_rows(200), seq2seq_rows(40, seed=1))
    final = finished["metrics"]["final"]
    assert final["eval_chrf"] >= 0.8 and final["eval_rougeL"] >= 0.8, final
    assert final["eval_bleu"] >= 0.5, final
    # One event per epoch: past the default page of 100.
    events = service.client.get(f"/v1/jobs/{finished['id']}/events",
                                params={"limit": 1000}).json()["data"]
    shown = next(event for event in events if event["kind"] == "samples")["data"]["samples"]
    model = service.download_model(finished["id"], tmp_path / "download")
    assert json.loads((model / "samples.json").read_text()) == shown and len(shown) == 3
    # A new source shaped like the toy ones: four filler words, a topic, a mood.
    assert generated_text(model, "the cats film was really awful") == "about cats and awful"


def test_multi_label_with_lora_through_the_service(service: Service, tmp_path: Path) -> None:
    dataset = service.upload(write_rows(tmp_path / "tags.jsonl", multi_label_rows(200)))
    job = service.submit({"task": "text-classification", "model": TINY_MODEL,
                          "dataset": {"train": dataset["id"], "validation_split": 0.2,
                                      "label_column": "labels", "multi_label": True},
                          "hyperparameters": {"epochs": 6, "learning_rate": 1e-2},
                          "lora": {"r": 4}})
    finished = service.wait_for(job["id"])
    assert finished["status"] == "succeeded", finished["error"]
    assert finished["metrics"]["final"]["eval_f1_micro"] >= 0.7
    paths = {a["path"] for a in service.client.get(
        f"/v1/jobs/{job['id']}/artifacts").json()["data"]}
    assert {"model.safetensors", "adapter/adapter_model.safetensors",
            "adapter/adapter_config.json"} <= paths


def test_two_projects_cannot_reach_each_other(service: Service, tmp_path: Path) -> None:
    dataset = service.upload(write_rows(tmp_path / "d.csv", sentiment_rows(40)))
    done = service.submit({"task": "text-classification", "model": TINY_MODEL,
                           "dataset": {"train": dataset["id"]},
                           "hyperparameters": {"max_steps": 2}})
    assert service.wait_for(done["id"])["status"] == "succeeded"
    running = service.submit(long_spec(dataset["id"]))
    service.wait_for(running["id"], ("running",))
    other = httpx.Client(base_url=service.client.base_url, timeout=30,
                         headers={"Authorization": f"Bearer {service.create_key('team-b')}"})
    try:
        for method, path in [
                ("GET", f"/v1/jobs/{done['id']}"), ("GET", f"/v1/jobs/{done['id']}/events"),
                ("GET", f"/v1/jobs/{done['id']}/metrics"),
                ("GET", f"/v1/jobs/{done['id']}/artifacts"),
                ("GET", f"/v1/jobs/{done['id']}/artifacts/config.json"),
                ("GET", f"/v1/jobs/{done['id']}/model"),
                ("POST", f"/v1/jobs/{running['id']}/cancel"),
                ("GET", f"/v1/datasets/{dataset['id']}"),
                ("GET", f"/v1/datasets/{dataset['id']}/preview"),
                ("DELETE", f"/v1/datasets/{dataset['id']}")]:
            response = other.request(method, path)
            assert response.status_code == 404, (method, path, response.text)
        assert other.get("/v1/jobs").json()["data"] == []
        assert other.get("/v1/datasets").json()["data"] == []
    finally:
        other.close()
    assert service.client.get(f"/v1/jobs/{running['id']}").json()["status"] == "running"
    assert service.client.get(f"/v1/datasets/{dataset['id']}").status_code == 200
    service.client.post(f"/v1/jobs/{running['id']}/cancel")
    assert service.wait_for(running["id"])["status"] == "cancelled"
    # With Redis as the broker, request counts live in Redis, shared by every API process.
    assert redis.Redis.from_url(service.env["FT_BROKER_URL"]).keys("finetune:ratelimit:*")


def test_a_pickled_model_is_refused_and_never_unpickled(service: Service, tmp_path: Path,
                                                         model_catalog: Path) -> None:
    marker = tmp_path / "canary-ran"
    pickled_model(model_catalog / TINY_MODEL, model_catalog / "canary" / "pickled", marker)
    dataset = service.upload(write_rows(tmp_path / "d.csv", sentiment_rows(40)))
    job = service.submit({"task": "text-classification", "model": "canary/pickled",
                          "dataset": {"train": dataset["id"]}})
    failed = service.wait_for(job["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "unsafe_model_format"
    assert "pytorch_model.bin" in failed["error"]["message"] and failed["error"]["hint"]
    assert not marker.exists()


def test_an_upload_far_over_the_limit_stops_early(service: Service, tmp_path: Path) -> None:
    """256 MiB against a 1 MiB limit: 413 at once, the partial file gone, memory flat."""
    port = free_port()
    env = {**service.env, "FT_MAX_UPLOAD_BYTES": str(1024 * 1024)}
    api = finetune("api", "--port", str(port), env=env, cwd=tmp_path, log=tmp_path / "api.log")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as probe:
            wait_ready(probe, api, tmp_path / "api.log")
        before = resident_kib(api.pid)
        status, body, sent = stream_chunked_upload(port, service.api_key, 256 * 1024 * 1024)
        assert status == 413 and b'"upload_too_large"' in body, (status, body)
        assert sent < 64 * 1024 * 1024, f"the server read {sent} bytes before refusing"
        assert resident_kib(api.pid) - before < 50 * 1024
        assert list((service.storage_dir / "tmp").iterdir()) == []
    finally:
        stop(api)


def resident_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])


def stream_chunked_upload(port: int, api_key: str, total: int) -> tuple[int, bytes, int]:
    """Send a chunked multipart upload until the server answers; (status, body, bytes sent)."""
    chunk = b"a sentence that repeats,1\n" * 2500
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"POST /v1/datasets HTTP/1.1\r\nHost: localhost\r\n"
                     f"Authorization: Bearer {api_key}\r\nTransfer-Encoding: chunked\r\n"
                     "Content-Type: multipart/form-data; boundary=b0undary\r\n\r\n".encode())
        head = (b'--b0undary\r\nContent-Disposition: form-data; name="file"; '
                b'filename="big.csv"\r\n\r\ntext,label\n')
        sent = 0
        for data in itertools.chain([head], itertools.repeat(chunk)):
            if sent >= total or select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(data)
        answer = b""
        try:
            # Up to the answer's end: the server may keep the connection open after it.
            while not whole_response(answer) and (piece := sock.recv(65536)):
                answer += piece
        except (ConnectionResetError, TimeoutError):
            pass
    head_line, _, rest = answer.partition(b"\r\n")
    status = int(head_line.split()[1]) if head_line.startswith(b"HTTP/") else 0
    return status, rest.partition(b"\r\n\r\n")[2], sent


def whole_response(answer: bytes) -> bool:
    """Whether `answer` holds an HTTP response's head and its Content-Length bytes of body;
    without that header, its body ends only where the server closes the connection."""
    head, separator, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:] if separator else []:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False
