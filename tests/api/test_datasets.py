from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fastapi.testclient import TestClient

from app.config import Settings
from tests.api.helpers import assert_error, job_spec, upload_file, upload_rows
from tests.factories import sentiment_rows


class TestUpload:
    def test_csv_is_inspected_and_hashed(self, api: TestClient, tmp_path: Path) -> None:
        dataset = upload_rows(api, tmp_path, [{"text": "good film", "label": "positive"},
                                              {"text": "bad film", "label": "negative"}])
        assert dataset["id"].startswith("ds_")
        assert dataset["format"] == "csv"
        assert dataset["num_rows"] == 2
        assert dataset["columns"] == [{"name": "text", "type": "string"},
                                      {"name": "label", "type": "string"}]
        assert dataset["sha256"] == hashlib.sha256(
            (tmp_path / "train.csv").read_bytes()).hexdigest()
        assert api.get(f"/v1/datasets/{dataset['id']}").json() == dataset

    def test_every_format(self, api: TestClient, tmp_path: Path) -> None:
        rows = sentiment_rows(5)
        for suffix in ("csv", "tsv", "jsonl", "json", "parquet"):
            dataset = upload_rows(api, tmp_path, rows, filename=f"data.{suffix}")
            assert dataset["format"] == suffix
            assert dataset["num_rows"] == 5
            assert [c["name"] for c in dataset["columns"]] == ["text", "label"]

    def test_declared_format_and_name_win(self, api: TestClient, tmp_path: Path) -> None:
        path = tmp_path / "export.txt"
        path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n')
        response = upload_file(api, path, format="jsonl", name="my data")
        assert response.status_code == 201, response.text
        assert response.json()["name"] == "my data"
        assert response.json()["columns"][1] == {"name": "label", "type": "integer"}

    def test_unknown_extension(self, api: TestClient, tmp_path: Path) -> None:
        path = tmp_path / "data.xlsx"
        path.write_bytes(b"PK\x03\x04")
        assert_error(upload_file(api, path), 422, "unsupported_format", "format")

    def test_bad_files_are_refused_and_not_kept(self, api: TestClient, tmp_path: Path,
                                                settings: Settings) -> None:
        cases = {
            "empty.csv": (b"", "dataset_empty"),
            "header.csv": (b"text,label\n", "dataset_empty"),
            "garbage.csv": (bytes(range(256)) * 4, None),
            "latin1.csv": ("text,label\ncaf\xe9,1\n".encode("latin-1"), "dataset_encoding"),
            "ragged.csv": (b"text,label\ngood,1\nbad,0,extra\n", "dataset_ragged_rows"),
        }
        for filename, (content, code) in cases.items():
            path = tmp_path / filename
            path.write_bytes(content)
            response = upload_file(api, path)
            assert response.status_code == 422, (filename, response.text)
            error = response.json()["error"]
            if code:
                assert error["code"] == code, (filename, error)
            if filename == "ragged.csv":
                assert "line 3" in error["message"].lower()
        assert not list(settings.storage_dir.glob("datasets/*/*"))
        assert list((settings.storage_dir / "tmp").iterdir()) == []

    def test_over_the_limit_is_413_and_leaves_nothing(self, api: TestClient, tmp_path: Path,
                                                      settings: Settings) -> None:
        path = tmp_path / "big.csv"
        line = b"a fairly long sentence that repeats,1\n"
        path.write_bytes(b"text,label\n" + line * (2 * settings.max_upload_bytes // len(line)))
        assert_error(upload_file(api, path), 413, "upload_too_large", "file")
        assert list((settings.storage_dir / "tmp").iterdir()) == []
        assert api.get("/v1/datasets").json()["data"] == []

    def test_over_the_limit_without_content_length(self, api: TestClient,
                                                   settings: Settings) -> None:
        boundary = "b0undary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"big.csv\"\r\n\r\ntext,label\r\n").encode()

        def body():  # a generator makes the client send the body chunked
            yield head
            for _ in range(settings.max_upload_bytes // 1000 + 10):
                yield b"x" * 998 + b"\r\n"
            yield f"\r\n--{boundary}--\r\n".encode()

        response = api.post("/v1/datasets", content=body(),
                            headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert_error(response, 413, "upload_too_large")
        assert list((settings.storage_dir / "tmp").iterdir()) == []

    def test_not_multipart(self, api: TestClient) -> None:
        assert_error(api.post("/v1/datasets", json={"file": "x"}), 400, "invalid_multipart")

    def test_missing_file_part(self, api: TestClient) -> None:
        response = api.post("/v1/datasets", files={"other": ("a.csv", b"text\nx\n")})
        assert_error(response, 422, "invalid_request", "file")


class TestReadAndDelete:
    def test_list_is_paginated_newest_first(self, api: TestClient, tmp_path: Path) -> None:
        ids = [upload_rows(api, tmp_path, sentiment_rows(3), f"d{i}.csv")["id"]
               for i in range(3)]
        first = api.get("/v1/datasets", params={"limit": 2}).json()
        assert [d["id"] for d in first["data"]] == ids[::-1][:2]
        assert first["has_more"] is True
        rest = api.get("/v1/datasets", params={"limit": 2, "after": ids[1]}).json()
        assert [d["id"] for d in rest["data"]] == [ids[0]]
        assert rest["has_more"] is False
        assert_error(api.get("/v1/datasets", params={"after": "ds_nope"}), 422,
                     "invalid_request", "after")

    def test_preview(self, api: TestClient, tmp_path: Path) -> None:
        dataset = upload_rows(api, tmp_path, sentiment_rows(20))
        preview = api.get(f"/v1/datasets/{dataset['id']}/preview", params={"limit": 3}).json()
        assert len(preview["rows"]) == 3
        assert set(preview["rows"][0]) == {"text", "label"}
        assert_error(api.get(f"/v1/datasets/{dataset['id']}/preview", params={"limit": 0}),
                     422, "invalid_request", "limit")

    def test_unknown_id_is_404(self, api: TestClient) -> None:
        for method, path in (("get", "/v1/datasets/ds_nope"),
                             ("get", "/v1/datasets/ds_nope/preview"),
                             ("delete", "/v1/datasets/ds_nope")):
            assert_error(getattr(api, method)(path), 404, "not_found")

    def test_delete_refused_while_a_job_uses_it(self, api: TestClient, tmp_path: Path,
                                                settings: Settings) -> None:
        dataset = upload_rows(api, tmp_path, sentiment_rows(20))
        job = api.post("/v1/jobs", json=job_spec(dataset["id"])).json()
        assert_error(api.delete(f"/v1/datasets/{dataset['id']}"), 409, "dataset_in_use")
        assert api.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
        assert api.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
        assert_error(api.get(f"/v1/datasets/{dataset['id']}"), 404, "not_found")
        assert not (settings.storage_dir / "datasets" / dataset["id"]).exists()
        # The finished job still shows which data it was submitted with.
        assert api.get(f"/v1/jobs/{job['id']}").json()["spec"]["dataset"]["train"] == \
            dataset["id"]


def test_error_bodies_are_json_for_unknown_routes(api: TestClient) -> None:
    response = api.get("/v1/nothing-here")
    assert_error(response, 404, "not_found")
    assert json.loads(response.text)["error"]["message"]


class TestConll:
    def test_sentences_become_rows_of_tokens_and_tags(self, api: TestClient,
                                                      tmp_path: Path) -> None:
        path = tmp_path / "ner.conll"
        path.write_text("-DOCSTART- -X- O\n\nAda NNP B-PER\nLovelace NNP I-PER\nwrote VBD O\n"
                        "\n\nin IN O\nLondon NNP B-LOC\n")
        dataset = upload_file(api, path).json()
        assert dataset["format"] == "conll" and dataset["num_rows"] == 2
        assert dataset["columns"] == [{"name": "tokens", "type": "list"},
                                      {"name": "tags", "type": "list"}]
        rows = api.get(f"/v1/datasets/{dataset['id']}/preview").json()["rows"]
        assert rows == [{"tokens": ["Ada", "Lovelace", "wrote"], "tags": ["B-PER", "I-PER", "O"]},
                        {"tokens": ["in", "London"], "tags": ["O", "B-LOC"]}]

    def test_a_word_without_a_tag_names_its_line(self, api: TestClient, tmp_path: Path) -> None:
        path = tmp_path / "bad.conll"
        path.write_text("Ada B-PER\nLovelace\n")
        error = assert_error(upload_file(api, path), 422, "dataset_invalid_conll", "file")
        assert "Line 2" in error["message"]
