"""Hugging Face Arrow uploads: saved datasets, packed as the users pack them, to Parquet."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.datasets import arrow_files
from app.datasets.arrow_files import ARROW_SUFFIXES, arrow_to_parquet
from app.datasets.formats import inspect_file
from app.datasets.inspection import DatasetFormatError
from tests.datasets.helpers import types

ROWS = [{"text": f"review {i}", "label": i % 2, "tokens": ["w"] * (i % 3), "score": i / 4,
         "meta": {"source": "web", "stars": i}} for i in range(7)]
FEATURES = datasets.Features({
    "text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"]),
    "tokens": datasets.Sequence(datasets.Value("string")), "score": datasets.Value("float64"),
    "meta": {"source": datasets.Value("string"), "stars": datasets.Value("int32")}})
TYPES = {"text": "string", "label": "integer", "tokens": "list", "score": "float",
         "meta": "object"}
MAX_BYTES = 64 * 1024**2


@pytest.fixture(autouse=True)
def _quiet() -> None:
    datasets.disable_progress_bars()


def _dataset(rows: list[dict[str, Any]] = ROWS) -> datasets.Dataset:
    columns = {name: [row[name] for row in rows] for name in FEATURES}
    return datasets.Dataset.from_dict(columns, features=FEATURES)


def _saved(tmp_path: Path, num_shards: int = 2, name: str = "saved") -> Path:
    folder = tmp_path / name
    _dataset().save_to_disk(str(folder), num_shards=num_shards)
    return folder


def _tar(folder: Path, archive: Path, arcname: str, mode: str = "w") -> Path:
    with tarfile.open(archive, mode) as tar:
        tar.add(folder, arcname=arcname)
    return archive


def _zip(folder: Path, archive: Path, prefix: str) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as packed:
        for path in sorted(folder.rglob("*")):
            packed.write(path, f"{prefix}{path.relative_to(folder)}")
    return archive


def _convert(source: Path, kind: str, max_bytes: int = MAX_BYTES) -> Path:
    target = source.parent / "converted.parquet"
    arrow_to_parquet(source, kind, target, max_bytes=max_bytes)
    return target


def _refused(source: Path, kind: str, code: str, max_bytes: int = MAX_BYTES) -> str:
    target = source.parent / "converted.parquet"
    with pytest.raises(DatasetFormatError) as caught:
        arrow_to_parquet(source, kind, target, max_bytes=max_bytes)
    assert caught.value.code == code, caught.value.message
    assert not target.exists()
    return caught.value.message


@pytest.mark.parametrize(("pack", "kind"), [
    (lambda folder, out: _tar(folder, out / "d.tar", "."), "tar"),
    (lambda folder, out: _tar(folder, out / "d.tar", "saved"), "tar"),
    (lambda folder, out: _tar(folder, out / "d.tar.gz", "saved", "w:gz"), "tar"),
    (lambda folder, out: _zip(folder, out / "d.zip", ""), "zip"),
    (lambda folder, out: _zip(folder, out / "d.zip", "saved/"), "zip"),
], ids=["tar-root", "tar-folder", "tgz", "zip-root", "zip-folder"])
def test_saved_dataset_in_an_archive(tmp_path: Path, pack: Any, kind: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    archive = pack(_saved(tmp_path), out)
    target = _convert(archive, kind)
    table = pq.read_table(target)
    assert table.to_pylist() == ROWS  # both shards, in order
    assert table.schema.field("label").type == pa.int64()
    assert table.schema.field("tokens").type == pa.list_(pa.string())
    inspection = inspect_file(target, "parquet")
    assert (inspection.num_rows, types(inspection)) == (len(ROWS), TYPES)
    assert sorted(out.iterdir()) == [target, archive]  # nothing extracted, no scratch left


def test_worker_reads_class_label_names(tmp_path: Path) -> None:
    target = _convert(_tar(_saved(tmp_path), tmp_path / "d.tar", "."), "tar")
    loaded = datasets.load_dataset("parquet", data_files=str(target), split="train",
                                   cache_dir=str(tmp_path / "cache"))
    assert loaded.features["label"] == datasets.ClassLabel(names=["neg", "pos"])
    assert loaded[0]["meta"] == {"source": "web", "stars": 0}


def test_decoding_features_are_not_kept(tmp_path: Path) -> None:
    # An Image column decodes in the worker by opening the path a row holds: kept as data.
    dataset = datasets.Dataset.from_dict({"text": ["a"], "image": [{"bytes": None,
                                                                    "path": "/etc/hostname"}]},
                                         features=datasets.Features({
                                             "text": datasets.Value("string"),
                                             "image": datasets.Image()}))
    dataset.save_to_disk(str(tmp_path / "saved"))
    target = _convert(_tar(tmp_path / "saved", tmp_path / "d.tar", "."), "tar")
    assert pq.read_schema(target).metadata is None
    assert types(inspect_file(target, "parquet")) == {"text": "string", "image": "object"}


def test_single_arrow_file_stream_and_file_format(tmp_path: Path) -> None:
    shard = _saved(tmp_path, num_shards=1) / "data-00000-of-00001.arrow"
    assert pq.read_table(_convert(shard, "arrow")).to_pylist() == ROWS
    table = pa.table({"text": ["a", "b"], "n": [1, 2]})
    with pa.ipc.new_file(tmp_path / "file.arrow", table.schema) as writer:
        writer.write_table(table, max_chunksize=1)
    assert pq.read_table(_convert(tmp_path / "file.arrow", "arrow")).equals(table)


def test_state_json_decides_the_order(tmp_path: Path) -> None:
    folder = _saved(tmp_path)
    state = json.loads((folder / "state.json").read_text())
    state["_data_files"].reverse()
    (folder / "state.json").write_text(json.dumps(state))
    rows = pq.read_table(_convert(_tar(folder, tmp_path / "d.tar", "."), "tar")).to_pylist()
    assert rows == ROWS[4:] + ROWS[:4]


def test_without_state_json_shards_are_sorted(tmp_path: Path) -> None:
    folder = _saved(tmp_path)
    (folder / "state.json").unlink()
    (folder / "cache-1234.arrow").write_bytes(b"a map() cache, not a shard")
    archive = tmp_path / "d.tar"
    with tarfile.open(archive, "w") as tar:  # shards added in reverse
        for path in sorted(folder.iterdir(), reverse=True):
            tar.add(path, arcname=path.name)
    assert pq.read_table(_convert(archive, "tar")).to_pylist() == ROWS


def test_unsafe_members_are_ignored(tmp_path: Path) -> None:
    folder = _saved(tmp_path, num_shards=1)
    (folder / "state.json").unlink()
    (tmp_path / "work").mkdir()
    archive = _tar(folder, tmp_path / "work" / "d.tar", "saved")
    with tarfile.open(archive, "a") as tar:
        for name in ("../evil", "/tmp/evil-abs", "saved/../../evil.arrow",
                     "saved/.hidden.arrow", "__MACOSX/saved/._data-00001-of-00001.arrow"):
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        link = tarfile.TarInfo("saved/data-00001-of-00002.arrow")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        hard = tarfile.TarInfo("saved/data-00002-of-00002.arrow")
        hard.type, hard.linkname = tarfile.LNKTYPE, "saved/data-00000-of-00001.arrow"
        tar.addfile(hard)
    before = sorted(tmp_path.rglob("*"))
    target = _convert(archive, "tar")
    assert pq.read_table(target).to_pylist() == ROWS
    assert sorted(tmp_path.rglob("*")) == sorted([*before, target])
    assert not Path("/tmp/evil-abs").exists()


def test_zip_members_outside_the_folder_are_ignored(tmp_path: Path) -> None:
    archive = _zip(_saved(tmp_path, num_shards=1), tmp_path / "d.zip", "saved/")
    with zipfile.ZipFile(archive, "a") as packed:
        packed.writestr("../evil.arrow", b"evil")
        packed.writestr("/evil.json", b"{}")
    assert pq.read_table(_convert(archive, "zip")).to_pylist() == ROWS
    assert not (tmp_path.parent / "evil.arrow").exists()


def test_zip_bomb_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as packed, \
            packed.open("saved/data-00000-of-00001.arrow", "w") as member:
        for _ in range(32):
            member.write(bytes(1024**2))
    assert archive.stat().st_size < 1024**2
    message = _refused(archive, "zip", "dataset_too_large", max_bytes=8 * 1024**2)
    assert "more than 8,388,608 bytes" in message


def test_gzip_bomb_is_refused_while_unpacking(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("data-00000-of-00001.arrow")
        info.size = 32 * 1024**2
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    _refused(archive, "tar", "dataset_too_large", max_bytes=8 * 1024**2)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bomb.tar.gz"]


def test_archive_without_a_dataset(tmp_path: Path) -> None:
    archive = tmp_path / "d.zip"
    with zipfile.ZipFile(archive, "w") as packed:
        packed.writestr("export/train.csv", "text,label\na,1\n")
        packed.writestr("export/README.txt", "my data")
    message = _refused(archive, "zip", "dataset_invalid_arrow")
    assert "export/train.csv" in message and "save_to_disk" in message


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_not_an_archive(tmp_path: Path, kind: str) -> None:
    upload = tmp_path / "d.bin"
    upload.write_bytes(b"text,label\n" * 200)
    assert f"not a readable {kind} archive" in _refused(upload, kind, "dataset_unreadable")


@pytest.mark.parametrize("keep_dict_json", [True, False])
def test_dataset_dict_is_refused_with_its_splits(tmp_path: Path, keep_dict_json: bool) -> None:
    dataset = _dataset()
    datasets.DatasetDict({"train": dataset, "test": dataset}).save_to_disk(str(tmp_path / "dd"))
    if not keep_dict_json:
        (tmp_path / "dd" / "dataset_dict.json").unlink()
    message = _refused(_tar(tmp_path / "dd", tmp_path / "d.tar", "."), "tar",
                       "dataset_invalid_arrow")
    splits = "train, test" if keep_dict_json else "test, train"
    assert f"DatasetDict with the splits {splits}" in message
    assert "`tar -cf" in message and "-C saved" in message


def test_random_bytes_arrow_file(tmp_path: Path) -> None:
    upload = tmp_path / "d.arrow"
    upload.write_bytes(bytes(range(256)) * 40)
    message = _refused(upload, "arrow", "dataset_unreadable")
    assert message.startswith("The file is not an Arrow file")


def test_shards_with_different_schemas(tmp_path: Path) -> None:
    folder = tmp_path / "saved"
    folder.mkdir()
    for number, table in enumerate([pa.table({"text": ["a"]}), pa.table({"text": [1]})]):
        with pa.ipc.new_stream(folder / f"data-0000{number}-of-00002.arrow",
                               table.schema) as writer:
            writer.write_table(table)
    message = _refused(_tar(folder, tmp_path / "d.tar", "."), "tar", "dataset_invalid_arrow")
    assert "do not share one schema" in message and "(text: int64)" in message


def test_truncated_shard_leaves_no_parquet(tmp_path: Path) -> None:
    rows = [{**ROWS[0], "text": "x" * 100}] * 5000
    _dataset(rows).save_to_disk(str(tmp_path / "saved"), num_shards=1)
    shard = tmp_path / "saved" / "data-00000-of-00001.arrow"
    shard.write_bytes(shard.read_bytes()[:shard.stat().st_size * 3 // 4])
    assert "cannot be read to its end" in _refused(shard, "arrow", "dataset_unreadable")


def test_state_json_naming_a_missing_shard(tmp_path: Path) -> None:
    folder = _saved(tmp_path)
    (folder / "data-00001-of-00002.arrow").unlink()
    message = _refused(_tar(folder, tmp_path / "d.tar", "saved"), "tar", "dataset_invalid_arrow")
    assert "lists data-00001-of-00002.arrow, which the archive does not hold" in message


@pytest.mark.parametrize(("state", "problem"), [
    ('{"_data_files": 5}', 'has no "_data_files" list'),
    ('{"_data_files": [{"filename": "../data-00000-of-00002.arrow"}]}', 'no "_data_files" list'),
    ('{"_data_files": [', "is not valid JSON"),
])
def test_broken_state_json(tmp_path: Path, state: str, problem: str) -> None:
    folder = _saved(tmp_path)
    (folder / "state.json").write_text(state)
    message = _refused(_tar(folder, tmp_path / "d.tar", "saved"), "tar", "dataset_invalid_arrow")
    assert message.startswith("The archive member 'saved/state.json' ") and problem in message


def test_no_rows(tmp_path: Path) -> None:
    _dataset([]).save_to_disk(str(tmp_path / "saved"))
    _refused(_tar(tmp_path / "saved", tmp_path / "d.tar", "."), "tar", "dataset_empty")


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_too_many_members(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arrow_files, "_MAX_MEMBERS", 3)
    folder = _saved(tmp_path)  # two shards and two JSON files
    archive = (_tar(folder, tmp_path / "d.tar", ".") if kind == "tar"
               else _zip(folder, tmp_path / "d.zip", ""))
    assert "more than 3 files" in _refused(archive, kind, "dataset_invalid_arrow")


def test_zip_directory_is_measured_before_it_is_loaded(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _zip(_saved(tmp_path), tmp_path / "d.zip", "saved/")
    with archive.open("rb") as raw, zipfile.ZipFile(archive) as packed:
        directory = arrow_files._zip_directory_size(raw)  # entries of 46 bytes and a name each
        assert directory == sum(46 + len(info.filename) for info in packed.infolist())
    monkeypatch.setattr(arrow_files, "_MAX_ZIP_DIRECTORY_BYTES", directory - 1)
    assert "more than" in _refused(archive, "zip", "dataset_invalid_arrow")


def test_zip64_directory_size(tmp_path: Path) -> None:
    archive = tmp_path / "d.zip"
    with zipfile.ZipFile(archive, "w") as packed:
        for number in range(0x10000):  # more entries than the 32-bit end record counts
            packed.writestr(f"{number}", b"")
    data = bytearray(archive.read_bytes())
    assert data[-22 - 20:-22 - 16] == b"PK\x06\x07"  # the zip64 locator
    data[-22 + 12:-22 + 16] = bytes(4)  # the 32-bit record says 0: zipfile ignores it
    archive.write_bytes(data)
    with archive.open("rb") as raw, zipfile.ZipFile(archive) as packed:
        assert arrow_files._zip_directory_size(raw) == sum(
            46 + len(info.filename) for info in packed.infolist())


def test_suffixes() -> None:
    assert ARROW_SUFFIXES == {".arrow": "arrow", ".tar": "tar", ".tar.gz": "tar", ".tgz": "tar",
                              ".zip": "zip"}
