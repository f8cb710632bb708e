from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.storage import LocalStorage
from tests.api.helpers import upload_file
from tests.factories import sentiment_rows, write_rows


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    store = LocalStorage(tmp_path / "store")
    model = store.job_model_dir("job_a")
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "sub" / "file.txt").write_text("x")
    (store.job_dir("job_a") / "secret.txt").write_text("secret")
    (tmp_path / "outside.txt").write_text("outside")
    (model / "link.txt").symlink_to(tmp_path / "outside.txt")
    return store


def test_files_inside_the_model_resolve(storage: LocalStorage) -> None:
    assert storage.resolve_artifact("job_a", "config.json") == \
        storage.job_model_dir("job_a").resolve() / "config.json"
    assert storage.resolve_artifact("job_a", "sub/file.txt") is not None


@pytest.mark.parametrize("path", ["../secret.txt", "sub/../../secret.txt", "/etc/passwd",
                                  "\\etc\\passwd", "", "sub", "link.txt", "config.json\x00",
                                  "../../outside.txt", "nope.json"])
def test_anything_else_does_not(storage: LocalStorage, path: str) -> None:
    assert storage.resolve_artifact("job_a", path) is None


def test_the_local_store_streams_what_a_bucket_would_redirect(api: TestClient,
                                                             tmp_path: Path) -> None:
    source = write_rows(tmp_path / "train.csv", sentiment_rows(40))
    dataset = upload_file(api, source).json()
    url = f"/v1/files/{dataset['id']}/content"
    content = source.read_bytes()
    answer = api.get(url, params={"redirect": "true"}, follow_redirects=False)
    assert answer.status_code == 200 and answer.content == content  # no URL to send it to
    part = api.get(url, headers={"Range": "bytes=5-9"})
    assert part.status_code == 206 and part.content == content[5:10]
    several = api.get(url, headers={"Range": "bytes=0-1,5-6"})  # answered with the whole file
    assert several.status_code == 200 and several.content == content
    assert api.get(url, headers={"Range": f"bytes={len(content)}-"}).status_code == 416
