from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import assert_error, job_spec, sentiment_dataset, upload_rows
from tests.conftest import TINY_BART
from tests.factories import (
    entity_rows,
    multi_label_rows,
    qa_rows,
    regression_rows,
    sentiment_rows,
    seq2seq_rows,
    write_rows,
)


@pytest.fixture
def dataset(api: TestClient, tmp_path: Path) -> dict[str, Any]:
    return sentiment_dataset(api, tmp_path)


class TestSubmit:
    def test_created_queued_with_resolved_spec(self, api: TestClient,
                                               dataset: dict[str, Any]) -> None:
        response = api.post("/v1/jobs", json=job_spec(dataset["id"], name="first"))
        assert response.status_code == 201, response.text
        job = response.json()
        assert job["id"].startswith("job_")
        assert job["status"] == "queued"
        assert job["name"] == "first"
        assert job["error"] is None and job["started_at"] is None
        assert job["progress"] == {"step": 0, "total_steps": None, "epoch": None,
                                   "percent": 0.0, "eta_seconds": None}
        hyper = job["spec"]["hyperparameters"]
        assert hyper["learning_rate"] == 2e-5 and hyper["batch_size"] == 16
        assert hyper["warmup_steps"] == 0
        assert job["spec"]["evaluation"]["strategy"] == "epoch"
        events = api.get(f"/v1/jobs/{job['id']}/events").json()["data"]
        assert [e["kind"] for e in events] == ["queued"]

    def test_the_classic_recipe_is_expressible(self, api: TestClient,
                                               dataset: dict[str, Any]) -> None:
        spec = {"task": "text-classification", "model": "bert-base-uncased",
                "dataset": {"train": dataset["id"], "validation": dataset["id"]},
                "hyperparameters": {"epochs": 3, "batch_size": 16, "eval_batch_size": 64,
                                    "warmup_steps": 500, "weight_decay": 0.01,
                                    "learning_rate": 2e-5},
                "logging_steps": 10, "evaluation": {"strategy": "steps", "steps": 200}}
        response = api.post("/v1/jobs", json=spec)
        assert response.status_code == 201, response.text
        assert response.json()["spec"]["evaluation"] == {
            "strategy": "steps", "steps": 200, "metric_for_best_model": None,
            "keep_best_model": False}
        assert response.json()["spec"]["early_stopping"] is None

    def test_masked_lm_needs_a_text_column_only(self, api: TestClient, tmp_path: Path) -> None:
        texts = upload_rows(api, tmp_path, [{"body": f"text number {i}"} for i in range(10)],
                            "texts.jsonl")
        ok = api.post("/v1/jobs", json={"task": "masked-lm", "model": "tiny/bert",
                                        "dataset": {"train": texts["id"],
                                                    "text_column": "body"}})
        assert ok.status_code == 201, ok.text
        assert ok.json()["spec"]["hyperparameters"]["mlm_probability"] == 0.15
        missing = api.post("/v1/jobs", json={"task": "masked-lm", "model": "tiny/bert",
                                             "dataset": {"train": texts["id"]}})
        assert_error(missing, 422, "column_not_found", "dataset.text_column")

    @pytest.mark.parametrize(("spec", "words"), [
        ({"task": "text-classification", "hyperparameters": {"mlm_probability": 0.2}},
         "masked-lm task only"),
        ({"task": "masked-lm", "dataset": {"text_pair_column": "b"}},
         "text-regression tasks only; remove it for masked-lm"),
        ({"task": "text-classification", "dataset": {"allow_unanswerable": True}},
         "dataset.allow_unanswerable is for the question-answering task only"),
        ({"task": "question-answering", "hyperparameters": {"num_beams": 4}},
         "hyperparameters.num_beams is for the seq2seq task only"),
        ({"task": "question-answering", "dataset": {"answer_start_column": "start"}},
         "answer_start_column goes with dataset.answer_column"),
        ({"task": "question-answering", "hyperparameters": {"doc_stride": 64}},
         "doc_stride must be under half of max_seq_length"),
        ({"task": "causal-lm", "dataset": {"messages_column": "chat", "prompt_column": "p",
                                           "completion_column": "c"}},
         "not both"),
        ({"task": "masked-lm", "evaluation": {"metric_for_best_model": "f1"}},
         "must be one of loss, perplexity"),
    ])
    def test_masked_lm_options(self, api: TestClient, dataset: dict[str, Any],
                               spec: dict[str, Any], words: str) -> None:
        body = job_spec(dataset["id"], task=spec["task"])
        for section in ("dataset", "hyperparameters", "evaluation"):
            body[section] = {**body.get(section, {}), **spec.get(section, {})}
        error = assert_error(api.post("/v1/jobs", json=body), 422, "invalid_request")
        assert words in error["message"], error

    def test_multi_label_needs_a_list_column_and_says_so(self, api: TestClient,
                                                          tmp_path: Path,
                                                          dataset: dict[str, Any]) -> None:
        lists = upload_rows(api, tmp_path, multi_label_rows(20), "tags.jsonl")
        spec = job_spec(lists["id"], dataset={"train": lists["id"], "label_column": "labels",
                                              "multi_label": True})
        ok = api.post("/v1/jobs", json=spec)
        assert ok.status_code == 201, ok.text
        assert ok.json()["spec"]["hyperparameters"]["multi_label_threshold"] == 0.5
        spec["dataset"]["multi_label"] = False
        error = assert_error(api.post("/v1/jobs", json=spec), 422, "invalid_label_column",
                             "dataset.multi_label")
        assert "set dataset.multi_label to true" in error["message"]
        single = job_spec(dataset["id"], dataset={"train": dataset["id"], "multi_label": True})
        error = assert_error(api.post("/v1/jobs", json=single), 422, "invalid_label_column",
                             "dataset.multi_label")
        assert "list of labels per row" in error["message"]

    def test_lora_is_resolved_and_refused_with_freeze(self, api: TestClient,
                                                      dataset: dict[str, Any]) -> None:
        ok = api.post("/v1/jobs", json=job_spec(dataset["id"], lora={"r": 16}))
        assert ok.status_code == 201, ok.text
        assert ok.json()["spec"]["lora"] == {"r": 16, "alpha": 16.0, "dropout": 0.05,
                                             "target_modules": None, "quantization": "none"}
        both = job_spec(dataset["id"], lora={}, freeze={"bottom_layers": 1})
        error = assert_error(api.post("/v1/jobs", json=both), 422, "invalid_request")
        assert "lora and freeze" in error["message"]
        bad = job_spec(dataset["id"], lora={"target_modules": ["../x"]})
        assert_error(api.post("/v1/jobs", json=bad), 422, "invalid_request",
                     "lora.target_modules.0")

    def test_token_classification_needs_lists_of_words_and_tags(
            self, api: TestClient, tmp_path: Path, dataset: dict[str, Any]) -> None:
        tagged = upload_rows(api, tmp_path, entity_rows(10), "tagged.jsonl")
        ok = api.post("/v1/jobs", json={"task": "token-classification", "model": "tiny/bert",
                                        "dataset": {"train": tagged["id"]}})
        assert ok.status_code == 201, ok.text
        assert ok.json()["spec"]["evaluation"]["metric_for_best_model"] is None
        flat = {"task": "token-classification", "model": "tiny/bert",
                "dataset": {"train": dataset["id"], "tokens_column": "text",
                            "tags_column": "label"}}
        error = assert_error(api.post("/v1/jobs", json=flat), 422, "invalid_column_type",
                             "dataset.tokens_column")
        assert "a list per row" in error["message"]

    def test_question_answering_reads_squad_answers(self, api: TestClient,
                                                     tmp_path: Path) -> None:
        squad = upload_rows(api, tmp_path, qa_rows(10), "squad.jsonl")
        ok = api.post("/v1/jobs", json=job_spec(squad["id"], task="question-answering"))
        assert ok.status_code == 201, ok.text
        hyper = ok.json()["spec"]["hyperparameters"]
        assert hyper["doc_stride"] == hyper["max_seq_length"] // 4
        assert hyper["max_answer_length"] == 30
        # The answer's text alone, without where it starts: not SQuAD answers.
        texts_only = [{**row, "answers": row["answers"]["text"][0]} for row in qa_rows(10)]
        flat = upload_rows(api, tmp_path, texts_only, "flat.jsonl")
        error = assert_error(
            api.post("/v1/jobs", json=job_spec(flat["id"], task="question-answering")),
            422, "invalid_column_type", "dataset.answers_column")
        assert 'an object per row such as {"text"' in error["message"], error
        assert "holds string values" in error["message"], error

    def test_question_answering_reads_flat_columns(self, api: TestClient,
                                                    tmp_path: Path) -> None:
        rows = [{"question": row["question"], "context": row["context"],
                 "answer": row["answers"]["text"][0], "start": row["answers"]["answer_start"][0],
                 "start_as_text": str(row["answers"]["answer_start"][0])}
                for row in qa_rows(10)]
        flat = upload_rows(api, tmp_path, rows, "flat.jsonl")

        def submit(**columns: str) -> Any:
            dataset = {"train": flat["id"], "answer_column": "answer", **columns}
            return api.post("/v1/jobs", json=job_spec(flat["id"], task="question-answering",
                                                      dataset=dataset))

        for columns in ({}, {"answer_start_column": "start"}):
            assert submit(**columns).status_code == 201, columns
        error = assert_error(submit(answer_start_column="start_as_text"), 422,
                             "invalid_column_type", "dataset.answer_start_column")
        assert "whole numbers" in error["message"], error

    def test_seq2seq_needs_source_and_target_columns(self, api: TestClient,
                                                     tmp_path: Path) -> None:
        pairs = upload_rows(api, tmp_path, seq2seq_rows(10), "pairs.jsonl")
        ok = api.post("/v1/jobs", json=job_spec(pairs["id"], task="seq2seq", model=TINY_BART))
        assert ok.status_code == 201, ok.text
        hyper = ok.json()["spec"]["hyperparameters"]
        assert (hyper["max_target_length"], hyper["generation_max_length"],
                hyper["num_beams"]) == (128, 128, 1)
        summaries = [{"source": row["source"], "summary": row["target"]}
                     for row in seq2seq_rows(10)]
        untargeted = upload_rows(api, tmp_path, summaries, "summaries.jsonl")
        error = assert_error(
            api.post("/v1/jobs", json=job_spec(untargeted["id"], task="seq2seq",
                                               model=TINY_BART)),
            422, "column_not_found", "dataset.target_column")
        assert "'target'" in error["message"] and "source, summary" in error["message"]

    def test_causal_lm_reads_text_or_prompt_and_completion(self, api: TestClient,
                                                            tmp_path: Path) -> None:
        pairs = upload_rows(api, tmp_path, [{"q": f"question {i}", "a": f"answer {i}"}
                                            for i in range(10)], "pairs.csv")
        spec = {"task": "causal-lm", "model": "tiny/gpt2",
                "dataset": {"train": pairs["id"], "prompt_column": "q",
                            "completion_column": "a"}}
        ok = api.post("/v1/jobs", json=spec)
        assert ok.status_code == 201, ok.text
        assert ok.json()["spec"]["hyperparameters"]["train_on_completion_only"] is True
        spec["dataset"]["completion_column"] = "answer"
        assert_error(api.post("/v1/jobs", json=spec), 422, "column_not_found",
                     "dataset.completion_column")
        plain = {"task": "causal-lm", "model": "tiny/gpt2", "dataset": {"train": pairs["id"]}}
        assert_error(api.post("/v1/jobs", json=plain), 422, "column_not_found",
                     "dataset.text_column")

    def test_causal_lm_reads_chats_as_lists_of_messages(self, api: TestClient,
                                                        tmp_path: Path) -> None:
        chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
        chats = upload_rows(api, tmp_path, [{"messages": chat, "text": "hi"}] * 4,
                            "chats.jsonl")
        spec = {"task": "causal-lm", "model": "tiny/gpt2",
                "dataset": {"train": chats["id"], "messages_column": "messages"}}
        ok = api.post("/v1/jobs", json=spec)
        assert ok.status_code == 201, ok.text
        assert ok.json()["spec"]["hyperparameters"]["train_on_completion_only"] is True
        spec["dataset"]["messages_column"] = "text"
        error = assert_error(api.post("/v1/jobs", json=spec), 422, "invalid_column_type",
                             "dataset.messages_column")
        assert '{"role": ..., "content": ...}' in error["message"]

    @pytest.mark.parametrize(("dataset_fields", "words"), [
        ({"prompt_column": "q"}, "go together"),
        ({"prompt_column": "q", "completion_column": "a", "task": "masked-lm"},
         "is for the causal-lm task only"),
    ])
    def test_prompt_columns_go_with_causal_lm(self, api: TestClient, dataset: dict[str, Any],
                                              dataset_fields: dict[str, Any], words: str) -> None:
        fields = dict(dataset_fields)
        body = job_spec(dataset["id"], task=fields.pop("task", "causal-lm"))
        body["dataset"] = {**body["dataset"], **fields}
        error = assert_error(api.post("/v1/jobs", json=body), 422, "invalid_request")
        assert words in error["message"], error

    def test_early_stopping_keeps_the_best_model_by_the_tasks_metric(
            self, api: TestClient, dataset: dict[str, Any]) -> None:
        response = api.post("/v1/jobs", json=job_spec(
            dataset["id"], early_stopping={"patience": 3}))
        assert response.status_code == 201, response.text
        spec = response.json()["spec"]
        assert spec["early_stopping"] == {"patience": 3, "threshold": 0.0}
        assert spec["evaluation"]["keep_best_model"] is True
        assert spec["evaluation"]["metric_for_best_model"] == "f1"

    @pytest.mark.parametrize(("change", "words"), [
        ({"early_stopping": {"patience": 2}, "dataset": {"validation_split": None}},
         "validation data"),
        ({"early_stopping": {"patience": 2}, "evaluation": {"strategy": "no"}},
         "evaluation strategy"),
        ({"evaluation": {"metric_for_best_model": "bleu"}}, "must be one of f1"),
        ({"early_stopping": {"patience": 0}}, "patience"),
    ])
    def test_early_stopping_needs_evaluations(self, api: TestClient, dataset: dict[str, Any],
                                              change: dict[str, Any], words: str) -> None:
        spec = job_spec(dataset["id"])
        for section, values in change.items():
            spec[section] = {**spec.get(section, {}), **values}
        error = assert_error(api.post("/v1/jobs", json=spec), 422, "invalid_request")
        assert words in error["message"], error

    def test_regression_needs_numeric_labels(self, api: TestClient, tmp_path: Path,
                                             dataset: dict[str, Any]) -> None:
        numeric = upload_rows(api, tmp_path, regression_rows(20), "scores.csv")
        ok = api.post("/v1/jobs", json=job_spec(numeric["id"], task="text-regression",
                                                dataset={"train": numeric["id"],
                                                         "label_column": "score"}))
        assert ok.status_code == 201, ok.text
        assert ok.json()["spec"]["evaluation"]["strategy"] == "no"
        assert_error(api.post("/v1/jobs", json=job_spec(dataset["id"], task="text-regression")),
                     422, "invalid_label_column", "dataset.label_column")

    @pytest.mark.parametrize(("change", "param"), [
        ({"hyperparameters": {"epochs": 0}}, "hyperparameters.epochs"),
        ({"hyperparameters": {"epochs": -1}}, "hyperparameters.epochs"),
        ({"hyperparameters": {"learning_rate": 0}}, "hyperparameters.learning_rate"),
        ({"hyperparameters": {"learning_rate": -0.1}}, "hyperparameters.learning_rate"),
        ({"hyperparameters": {"batch_size": 0}}, "hyperparameters.batch_size"),
        ({"hyperparameters": {"batch_size": 10**9}}, "hyperparameters.batch_size"),
        ({"hyperparameters": {"optimizer": "adam"}}, "hyperparameters.optimizer"),
        ({"task": "image-generation"}, "task"),
        ({"model": "../../etc/passwd"}, "model"),
        ({"model": "https://example.com/model"}, "model"),
        ({"model": "/abs/path"}, "model"),
        ({"evaluation": {"strategy": "sometimes"}}, "evaluation.strategy"),
    ])
    def test_invalid_values_name_the_field(self, api: TestClient, dataset: dict[str, Any],
                                           change: dict[str, Any], param: str) -> None:
        assert_error(api.post("/v1/jobs", json=job_spec(dataset["id"], **change)), 422,
                     "invalid_request", param)

    def test_unknown_fields_are_refused(self, api: TestClient, dataset: dict[str, Any]) -> None:
        spec = job_spec(dataset["id"], hyperparameters={"learnin_rate": 1e-4})
        error = assert_error(api.post("/v1/jobs", json=spec), 422, "unknown_field",
                             "hyperparameters.learnin_rate")
        assert "learnin_rate" in error["message"]
        assert_error(api.post("/v1/jobs", json={**job_spec(dataset["id"]), "gpu": "a100"}),
                     422, "unknown_field", "gpu")

    def test_missing_required_fields(self, api: TestClient) -> None:
        assert_error(api.post("/v1/jobs", json={"model": "x"}), 422, "invalid_request", "task")
        assert_error(api.post("/v1/jobs", json={"task": "text-classification", "model": "x",
                                                "dataset": {}}), 422, "invalid_request")

    def test_malformed_json(self, api: TestClient) -> None:
        response = api.post("/v1/jobs", content=b'{"task": "text-classification",',
                            headers={"content-type": "application/json"})
        assert_error(response, 400, "invalid_json")

    def test_unknown_dataset(self, api: TestClient) -> None:
        assert_error(api.post("/v1/jobs", json=job_spec("ds_missing")), 422,
                     "dataset_not_found", "dataset.train")

    def test_columns_are_checked_against_the_dataset(self, api: TestClient,
                                                     dataset: dict[str, Any]) -> None:
        for field in ("text_column", "label_column", "text_pair_column"):
            spec = job_spec(dataset["id"])
            spec["dataset"][field] = "nope"
            error = assert_error(api.post("/v1/jobs", json=spec), 422, "column_not_found",
                                 f"dataset.{field}")
            assert "'nope'" in error["message"] and "text, label" in error["message"]

    def test_evaluation_without_validation_data(self, api: TestClient,
                                                dataset: dict[str, Any]) -> None:
        spec = job_spec(dataset["id"], dataset={"train": dataset["id"]},
                        evaluation={"strategy": "epoch"})
        error = assert_error(api.post("/v1/jobs", json=spec), 422, "invalid_request")
        assert "validation" in error["message"]


class TestReadAndCancel:
    def test_list_filter_and_pagination(self, api: TestClient, dataset: dict[str, Any]) -> None:
        ids = [api.post("/v1/jobs", json=job_spec(dataset["id"])).json()["id"]
               for _ in range(3)]
        api.post(f"/v1/jobs/{ids[0]}/cancel")
        page = api.get("/v1/jobs", params={"limit": 2}).json()
        assert [j["id"] for j in page["data"]] == [ids[2], ids[1]] and page["has_more"]
        queued = api.get("/v1/jobs", params={"status": "queued"}).json()["data"]
        assert [j["id"] for j in queued] == [ids[2], ids[1]]
        cancelled = api.get("/v1/jobs", params={"status": "cancelled"}).json()["data"]
        assert [j["id"] for j in cancelled] == [ids[0]]
        assert_error(api.get("/v1/jobs", params={"status": "done"}), 422, "invalid_request",
                     "status")

    def test_cancel_queued_then_again(self, api: TestClient, dataset: dict[str, Any]) -> None:
        job = api.post("/v1/jobs", json=job_spec(dataset["id"])).json()
        first = api.post(f"/v1/jobs/{job['id']}/cancel")
        assert first.status_code == 200 and first.json()["status"] == "cancelled"
        assert first.json()["finished_at"] is not None
        second = api.post(f"/v1/jobs/{job['id']}/cancel")
        assert second.status_code == 200 and second.json()["status"] == "cancelled"
        kinds = [e["kind"] for e in api.get(f"/v1/jobs/{job['id']}/events").json()["data"]]
        assert kinds == ["queued", "cancelled"]

    def test_unknown_job_is_404_everywhere(self, api: TestClient) -> None:
        for method, path in (("get", ""), ("post", "/cancel"), ("get", "/events"),
                             ("get", "/metrics"), ("get", "/artifacts"),
                             ("get", "/artifacts/config.json"), ("get", "/model")):
            response = getattr(api, method)(f"/v1/jobs/job_missing{path}")
            assert_error(response, 404, "not_found")

    def test_model_of_an_unfinished_job(self, api: TestClient, dataset: dict[str, Any]) -> None:
        job = api.post("/v1/jobs", json=job_spec(dataset["id"])).json()
        assert_error(api.get(f"/v1/jobs/{job['id']}/model"), 409, "model_not_ready")
        assert api.get(f"/v1/jobs/{job['id']}/artifacts").json() == {"data": [],
                                                                    "has_more": False}
        assert api.get(f"/v1/jobs/{job['id']}/metrics").json() == {"job_id": job["id"],
                                                                  "series": {}}


class TestIdempotency:
    def test_replayed_submit_returns_the_original_job(self, api: TestClient,
                                                      dataset: dict[str, Any]) -> None:
        headers = {"Idempotency-Key": "submit-42"}
        first = api.post("/v1/jobs", json=job_spec(dataset["id"]), headers=headers)
        again = api.post("/v1/jobs", json=job_spec(dataset["id"]), headers=headers)
        assert first.status_code == again.status_code == 201
        assert again.json()["id"] == first.json()["id"]
        assert len(api.get("/v1/jobs").json()["data"]) == 1

    def test_same_key_other_body_is_refused(self, api: TestClient,
                                            dataset: dict[str, Any]) -> None:
        headers = {"Idempotency-Key": "submit-43"}
        assert api.post("/v1/jobs", json=job_spec(dataset["id"]), headers=headers).is_success
        other = job_spec(dataset["id"], hyperparameters={"epochs": 1})
        assert_error(api.post("/v1/jobs", json=other, headers=headers), 422,
                     "idempotency_key_reused", "Idempotency-Key")
        assert len(api.get("/v1/jobs").json()["data"]) == 1

    def test_replayed_upload_returns_the_original_dataset(self, api: TestClient,
                                                          tmp_path: Path,
                                                          settings: Any) -> None:
        path = write_rows(tmp_path / "d.csv", sentiment_rows(10))
        headers = {"Idempotency-Key": "upload-1"}
        ids = {api.post("/v1/datasets", files={"file": (path.name, path.read_bytes())},
                        headers=headers).json()["id"] for _ in range(2)}
        assert len(ids) == 1
        other = write_rows(tmp_path / "e.csv", sentiment_rows(12))
        assert_error(api.post("/v1/datasets", files={"file": (other.name, other.read_bytes())},
                              headers=headers), 422, "idempotency_key_reused")
        assert list((settings.storage_dir / "tmp").iterdir()) == []

    def test_server_caps(self, api: TestClient, dataset: dict[str, Any]) -> None:
        assert_error(api.post("/v1/jobs", json=job_spec(dataset["id"], max_attempts=50)), 422,
                     "invalid_request", "max_attempts")
        assert_error(api.post("/v1/jobs", json=job_spec(dataset["id"],
                                                        max_runtime_seconds=10**9)),
                     422, "invalid_request", "max_runtime_seconds")
