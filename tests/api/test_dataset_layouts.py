"""Datasets as fields distribute them: each layout is recognised through the real upload, its
rows read as the README documents, the tasks it fits shown, and a job on it needs no column
fields; a malformed record is refused by its number, a look-alike is not mistaken."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.datasets.layouts import ALPACA_PREAMBLE, ALPACA_PREAMBLE_WITH_INPUT
from tests.api.helpers import assert_error, upload_file, upload_rows
from tests.conftest import TINY_GPT2, TINY_MODEL
from tests.layout_files import (
    alpaca_records,
    sharegpt_records,
    write_json,
    write_jsonl,
    write_squad,
)


def uploaded(api: TestClient, path: Path, **fields: str) -> dict[str, Any]:
    response = upload_file(api, path, **fields)
    assert response.status_code == 201, response.text
    return response.json()


def preview(api: TestClient, dataset: dict[str, Any], limit: int = 10) -> list[dict[str, Any]]:
    return api.get(f"/v1/datasets/{dataset['id']}/preview", params={"limit": limit}).json()["rows"]


def submitted_spec(api: TestClient, spec: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/v1/jobs", json=spec)
    assert response.status_code == 201, response.text
    return response.json()["spec"]["dataset"]


class TestSquad:
    def test_the_official_nesting_becomes_one_question_per_row(self, api: TestClient,
                                                               tmp_path: Path) -> None:
        dataset = uploaded(api, write_squad(tmp_path / "dev-v2.0.json", 12, unanswerable=0.25))
        assert (dataset["source_format"], dataset["format"], dataset["layout"]) == \
            ("squad", "jsonl", "squad")
        assert dataset["num_rows"] == 12
        details = dataset["layout_details"]
        assert details["questions"] == 12 and 0 < details["unanswerable_questions"] < 12
        assert dataset["fits"] == {"question-answering": {"allow_unanswerable": True}}
        rows = preview(api, dataset, 12)
        assert set(rows[0]) == {"id", "title", "question", "context", "answers"}
        for row in rows:
            for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"],
                                   strict=True):
                assert row["context"][start:start + len(text)] == text
        assert any(row["answers"] == {"text": [], "answer_start": []} for row in rows)

    def test_a_job_needs_no_column_fields(self, api: TestClient, tmp_path: Path) -> None:
        dataset = uploaded(api, write_squad(tmp_path / "dev.json", 12, unanswerable=0.25))
        fields = submitted_spec(api, {"task": "question-answering", "model": TINY_MODEL,
                                      "dataset": {"train": dataset["id"]}})
        assert fields["allow_unanswerable"] is True
        assert (fields["question_column"], fields["context_column"]) == ("question", "context")

    def test_version_1_has_no_unanswerable_questions(self, api: TestClient,
                                                     tmp_path: Path) -> None:
        dataset = uploaded(api, write_squad(tmp_path / "train-v1.1.json", 6))
        assert dataset["fits"] == {"question-answering": {}}

    def test_a_json_with_data_rows_is_not_squad(self, api: TestClient, tmp_path: Path) -> None:
        path = write_json(tmp_path / "rows.json", {"data": [{"text": "good", "label": 1},
                                                            {"text": "bad", "label": 0}]})
        dataset = uploaded(api, path)
        assert (dataset["source_format"], dataset["layout"]) == ("json", "tabular")
        assert "text-classification" in dataset["fits"]

    def test_a_malformed_question_is_named(self, api: TestClient, tmp_path: Path) -> None:
        path = write_squad(tmp_path / "dev.json", 6)
        document = json.loads(path.read_text())
        document["data"][0]["paragraphs"][2]["qas"][0]["answers"][0].pop("answer_start")
        path.write_text(json.dumps(document))
        error = assert_error(upload_file(api, path), 422, "dataset_invalid_squad", "file")
        assert "data[0].paragraphs[2].qas[0]" in error["message"] and "q0002" in error["message"]

    def test_declared_squad_must_be_squad(self, api: TestClient, tmp_path: Path) -> None:
        path = write_json(tmp_path / "rows.json", [{"text": "good", "label": 1}])
        assert_error(upload_file(api, path, format="squad"), 422, "dataset_invalid_squad")


class TestAlpaca:
    def test_records_become_prompt_and_completion(self, api: TestClient,
                                                  tmp_path: Path) -> None:
        records = alpaca_records(6)
        dataset = uploaded(api, write_json(tmp_path / "alpaca_data.json", records))
        assert (dataset["layout"], dataset["format"]) == ("alpaca", "jsonl")
        assert dataset["fits"]["causal-lm"] == {"prompt_column": "prompt",
                                                "completion_column": "completion"}
        rows = preview(api, dataset)
        without_input, with_input = records[0], records[1]
        assert rows[0] == {"prompt": f"{ALPACA_PREAMBLE}\n\n### Instruction:\n"
                                     f"{without_input['instruction']}\n\n### Response:\n",
                           "completion": without_input["output"]}
        assert rows[1]["prompt"] == (f"{ALPACA_PREAMBLE_WITH_INPUT}\n\n### Instruction:\n"
                                     f"{with_input['instruction']}\n\n### Input:\n"
                                     f"{with_input['input']}\n\n### Response:\n")

    def test_a_system_prompt_replaces_the_preamble(self, api: TestClient,
                                                   tmp_path: Path) -> None:
        record = {"instruction": "Add.", "input": "2 and 2", "output": "4",
                  "system": "You are a calculator."}
        rows = preview(api, uploaded(api, write_jsonl(tmp_path / "a.jsonl", [record])))
        assert rows[0]["prompt"].startswith("You are a calculator.\n\n### Instruction:\nAdd.")

    def test_a_job_needs_no_column_fields(self, api: TestClient, tmp_path: Path) -> None:
        dataset = uploaded(api, write_json(tmp_path / "alpaca.json", alpaca_records(6)))
        fields = submitted_spec(api, {"task": "causal-lm", "model": TINY_GPT2,
                                      "dataset": {"train": dataset["id"]}})
        assert (fields["prompt_column"], fields["completion_column"]) == ("prompt", "completion")

    def test_a_record_without_output_is_named(self, api: TestClient, tmp_path: Path) -> None:
        records = [*alpaca_records(3), {"instruction": "Say hi.", "input": ""}]
        error = assert_error(upload_file(api, write_jsonl(tmp_path / "a.jsonl", records)),
                             422, "dataset_invalid_alpaca", "file")
        assert "Record 4" in error["message"] and '"output"' in error["message"]


class TestChats:
    def test_sharegpt_speakers_become_roles(self, api: TestClient, tmp_path: Path) -> None:
        records = sharegpt_records(4)
        records[0]["system"] = "Be brief."
        dataset = uploaded(api, write_json(tmp_path / "sharegpt.json", records))
        assert dataset["layout"] == "sharegpt"
        assert dataset["fits"] == {"causal-lm": {"messages_column": "messages"}}
        messages = preview(api, dataset)[0]["messages"]
        assert [turn["role"] for turn in messages] == ["system", "user", "assistant", "user",
                                                       "assistant"]
        assert messages[2]["content"] == records[0]["conversations"][1]["value"]

    def test_openai_chats_are_recognised(self, api: TestClient, tmp_path: Path) -> None:
        chats = [{"messages": [{"role": "user", "content": "hi"},
                               {"role": "assistant", "content": "hello"}]}] * 3
        dataset = uploaded(api, write_jsonl(tmp_path / "chat.jsonl", chats))
        assert dataset["layout"] == "openai-chat"
        fields = submitted_spec(api, {"task": "causal-lm", "model": TINY_GPT2,
                                      "dataset": {"train": dataset["id"]}})
        assert fields["messages_column"] == "messages"

    @pytest.mark.parametrize(("turn", "said"), [
        ({"from": "bot", "value": "hi"}, "'bot'"),
        ({"from": "gpt"}, '"content"'),
        ("hi", "must be an object"),
    ])
    def test_a_bad_turn_is_named(self, api: TestClient, tmp_path: Path, turn: Any,
                                 said: str) -> None:
        records = sharegpt_records(3)
        records[1]["conversations"][1] = turn
        error = assert_error(upload_file(api, write_jsonl(tmp_path / "s.jsonl", records)),
                             422, "dataset_invalid_sharegpt", "file")
        assert "Record 2: conversations[1]" in error["message"] and said in error["message"]

    def test_a_chat_without_an_assistant_turn(self, api: TestClient, tmp_path: Path) -> None:
        chats = [{"messages": [{"role": "user", "content": "hi"}]}]
        error = assert_error(upload_file(api, write_jsonl(tmp_path / "c.jsonl", chats)),
                             422, "dataset_invalid_chat")
        assert "no assistant turn" in error["message"]


class TestPreferencePairs:
    def test_recognised_and_refused_for_jobs_with_the_reason(self, api: TestClient,
                                                              tmp_path: Path) -> None:
        pairs = [{"prompt": "Name a pet.", "chosen": "A cat.", "rejected": "A rock."}] * 3
        dataset = uploaded(api, write_jsonl(tmp_path / "pairs.jsonl", pairs))
        assert dataset["layout"] == "preference" and dataset["fits"] == {}
        error = assert_error(api.post("/v1/jobs", json={
            "task": "causal-lm", "model": TINY_GPT2, "dataset": {"train": dataset["id"]}}),
            422, "column_not_found")
        assert "preference pairs" in error["message"] and "preference tuning" in \
            error["message"]

    def test_chosen_and_rejected_must_match_in_kind(self, api: TestClient,
                                                    tmp_path: Path) -> None:
        pairs = [{"prompt": "Hi", "chosen": "Hello.",
                  "rejected": [{"role": "assistant", "content": "Go away."}]}]
        assert_error(upload_file(api, write_jsonl(tmp_path / "p.jsonl", pairs)), 422,
                     "dataset_invalid_preference")


class TestColumnsAsUploaded:
    def test_glue_names_fit_classification(self, api: TestClient, tmp_path: Path) -> None:
        rows = [{"sentence": "a fine film", "label": 1}, {"sentence": "dull", "label": 0}]
        dataset = upload_rows(api, tmp_path, rows, filename="sst2.tsv")
        assert dataset["layout"] == "tabular"
        assert dataset["fits"]["text-classification"] == {"text_column": "sentence"}
        fields = submitted_spec(api, {"task": "text-classification", "model": TINY_MODEL,
                                      "dataset": {"train": dataset["id"]}})
        assert fields["text_column"] == "sentence"

    def test_set_fields_are_left_as_they_are(self, api: TestClient, tmp_path: Path) -> None:
        rows = [{"sentence": "a fine film", "review": "yes", "label": 1}] * 2
        dataset = upload_rows(api, tmp_path, rows, filename="two.csv")
        fields = submitted_spec(api, {"task": "text-classification", "model": TINY_MODEL,
                                      "dataset": {"train": dataset["id"],
                                                  "text_column": "review"}})
        assert fields["text_column"] == "review"

    def test_the_422_names_the_layout_and_what_it_fits(self, api: TestClient,
                                                       tmp_path: Path) -> None:
        dataset = uploaded(api, write_json(tmp_path / "sharegpt.json", sharegpt_records(3)))
        error = assert_error(api.post("/v1/jobs", json={
            "task": "text-classification", "model": TINY_MODEL,
            "dataset": {"train": dataset["id"]}}), 422, "column_not_found")
        assert "ShareGPT conversations" in error["message"] and "causal-lm" in error["message"]

    def test_a_declared_layout_wins(self, api: TestClient, tmp_path: Path) -> None:
        rows = [{"prompt": "2+2=", "completion": "4", "chosen": "4", "rejected": "5"}] * 2
        path = write_jsonl(tmp_path / "mixed.jsonl", rows)
        assert uploaded(api, path)["layout"] == "preference"
        assert uploaded(api, path, layout="prompt-completion")["layout"] == "prompt-completion"
        assert_error(upload_file(api, path, layout="alpaca"), 422, "unsupported_layout",
                     "layout")
        assert_error(upload_file(api, path, layout="yaml"), 422, "unsupported_layout",
                     "layout")
