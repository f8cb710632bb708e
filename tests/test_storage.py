from __future__ import annotations

from pathlib import Path

import pytest

from app.storage import LocalStorage


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
