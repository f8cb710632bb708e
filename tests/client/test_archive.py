"""Unpacking a model archive against its manifest: only an exact match is accepted."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from app.client.archive import DownloadError, unpack_verified

FILES = {"config.json": b'{"model_type": "bert"}', "tokenizer/vocab.txt": b"[PAD]\n[UNK]\n"}


def manifest(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(body).hexdigest() for name, body in files.items()}


def archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return path


def test_a_matching_archive_unpacks_to_the_model_folder(tmp_path: Path) -> None:
    packed = archive(tmp_path / "m.tar.gz", {f"model/{n}": b for n, b in FILES.items()})
    model = unpack_verified(packed, tmp_path / "out", manifest(FILES))
    assert model == tmp_path / "out" / "model"
    assert (model / "tokenizer" / "vocab.txt").read_bytes() == FILES["tokenizer/vocab.txt"]


@pytest.mark.parametrize(("members", "problem"), [
    ({"model/config.json": b"{}", "model/tokenizer/vocab.txt": FILES["tokenizer/vocab.txt"]},
     "config.json: sha256 differs"),
    ({"model/config.json": FILES["config.json"]},
     "tokenizer/vocab.txt: in the manifest but missing"),
    ({**{f"model/{n}": b for n, b in FILES.items()}, "model/extra.bin": b"x"},
     "extra.bin: not in the job's artifact manifest"),
    ({**{f"model/{n}": b for n, b in FILES.items()}, "README": b"x"}, "README: not under model/"),
])
def test_any_difference_from_the_manifest_is_refused(tmp_path: Path, members: dict[str, bytes],
                                                     problem: str) -> None:
    packed = archive(tmp_path / "m.tar.gz", members)
    with pytest.raises(DownloadError, match="does not match") as raised:
        unpack_verified(packed, tmp_path / "out", manifest(FILES))
    assert problem in str(raised.value)


def test_entries_outside_the_target_are_refused(tmp_path: Path) -> None:
    packed = archive(tmp_path / "m.tar.gz", {"../escaped.txt": b"x"})
    with pytest.raises(DownloadError, match="could not be unpacked"):
        unpack_verified(packed, tmp_path / "out", manifest(FILES))
    assert not (tmp_path / "escaped.txt").exists()


def test_a_corrupt_archive_is_refused(tmp_path: Path) -> None:
    packed = tmp_path / "m.tar.gz"
    packed.write_bytes(archive(tmp_path / "good.tar.gz", {"model/a": b"x" * 1000})
                       .read_bytes()[:40])
    with pytest.raises(DownloadError, match="could not be unpacked"):
        unpack_verified(packed, tmp_path / "out", {"a": "0"})
