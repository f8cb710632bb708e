"""Hugging Face `datasets` Arrow uploads, converted to one Parquet file.

`Dataset.save_to_disk(folder)` writes `data-0000i-of-0000N.arrow` shards in the Arrow IPC
stream format, with `state.json` listing them in order and `dataset_info.json`. Users upload
one `.arrow` file, or that folder packed as `.tar`, `.tar.gz`/`.tgz` or `.zip`.

Archive members are streamed straight from the archive, one record batch at a time: nothing
is extracted by name, links and everything but the shards and their JSON are ignored, and
the bytes read are bounded so that a small archive cannot unpack into a huge one. Arrow files
hold data only; nothing in them is executed.

Standard library and pyarrow only: the API process must not import `datasets`.
"""

from __future__ import annotations

import gzip
import json
import re
import stat
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, Any, cast

import pyarrow as pa
import pyarrow.parquet as pq

from app.datasets.inspection import DatasetFormatError, empty_file

ARROW_SUFFIXES = {".arrow": "arrow", ".tar": "tar", ".tar.gz": "tar", ".tgz": "tar",
                  ".zip": "zip"}

_SHARD = re.compile(r"data-[0-9]+-of-[0-9]+\.arrow")
_STATE, _DICT = "state.json", "dataset_dict.json"
# A saved dataset is its shards and two small JSON files; these bound what listing an
# archive may cost before any of it is read.
_MAX_MEMBERS = 10_000
_MAX_ZIP_DIRECTORY_BYTES = 4 * 1024**2
_MAX_JSON_BYTES = 1024**2
_CHUNK_BYTES = 1024**2
# Features of `datasets` that only name types. Others (Image, Audio...) decode their column
# in the worker, e.g. by opening a path the row holds: without them, the column stays data.
_PLAIN_FEATURES = {"Value", "ClassLabel", "Sequence", "List", "LargeList"}
# Errors of a member's bytes: truncated or corrupt data, a bad CRC, an encrypted or
# unsupported zip entry.
_READ_ERRORS = (pa.ArrowException, OSError, EOFError, zlib.error, zipfile.BadZipFile,
                tarfile.TarError, RuntimeError, NotImplementedError)
_PACK_HINT = ("pack the folder that Dataset.save_to_disk wrote, e.g. "
              "`tar -cf data.tar -C saved .`")


@dataclass(frozen=True)
class _Member:
    path: PurePosixPath
    size: int  # as declared; zipfile and tarfile never read past it
    open: Callable[[], IO[bytes]]
    label: str  # how messages name it


def _archive_member(path: PurePosixPath, size: int, opener: Callable[[], IO[bytes]]) -> _Member:
    return _Member(path, size, opener, f"The archive member {str(path)!r}")


def arrow_to_parquet(source: Path, kind: str, target: Path, *, max_bytes: int) -> None:
    """Writes the dataset in `source` (kind "arrow", "tar" or "zip", as ARROW_SUFFIXES maps
    an upload's name) to one Parquet file at `target`, batch by batch. At most `max_bytes`
    are read uncompressed. Raises DatasetFormatError and leaves no `target` behind when the
    upload is not one readable, non-empty Dataset."""
    if kind not in ("arrow", "tar", "zip"):
        raise ValueError(f"unknown Arrow upload kind {kind!r}")
    if source.stat().st_size == 0:
        raise empty_file("The file is empty.")
    try:
        with _members(source, kind, target.parent, max_bytes) as members:
            shards = members if kind == "arrow" else _dataset_shards(members, max_bytes)
            _check_size(sum(shard.size for shard in shards), max_bytes)
            if _write_parquet(shards, target, max_bytes) == 0:
                raise empty_file("The Arrow dataset holds no rows.")
    except BaseException:
        target.unlink(missing_ok=True)
        raise


@contextmanager
def _members(source: Path, kind: str, scratch: Path, max_bytes: int) -> Iterator[list[_Member]]:
    """The upload itself, or the archive's regular files under safe relative names."""
    if kind == "arrow":
        yield [_Member(PurePosixPath(source.name), source.stat().st_size,
                       partial(source.open, "rb"), "The file")]
    elif kind == "zip":
        with _zip(source) as archive:
            yield [_archive_member(path, info.file_size, partial(archive.open, info))
                   for info in archive.infolist()
                   if not info.is_dir() and not stat.S_ISLNK(info.external_attr >> 16)
                   and (path := _safe_path(info.filename.replace("\\", "/")))]
    else:
        with _plain_tar(source, scratch, max_bytes) as raw, _tar(raw) as archive:
            # extractfile gives None for what is not a regular file: none is listed.
            yield [_archive_member(path, info.size,
                                   cast(Callable[[], IO[bytes]], partial(archive.extractfile, info)))
                   for info in _tar_infos(archive)
                   if info.isfile() and (path := _safe_path(info.name))]


@contextmanager
def _zip(source: Path) -> Iterator[zipfile.ZipFile]:
    # zipfile loads the whole central directory on opening: measure it first.
    with source.open("rb") as raw:
        directory = _zip_directory_size(raw)
    if directory > _MAX_ZIP_DIRECTORY_BYTES:
        raise _too_many_members()
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise DatasetFormatError(f"The upload is not a readable zip archive: {err}.",
                                 code="dataset_unreadable") from None
    with archive:
        if len(archive.infolist()) > _MAX_MEMBERS:
            raise _too_many_members()
        yield archive


def _zip_directory_size(raw: IO[bytes]) -> int:
    """The central directory's size as the end records declare it, found as zipfile finds
    them; 0 where there are none (zipfile then refuses the file)."""
    end = raw.seek(0, 2)
    raw.seek(max(0, end - (22 + 0xFFFF + 76)))  # record, longest comment, zip64 records
    tail = raw.read()
    at = len(tail) - 22 if tail[-22:-18] == b"PK\x05\x06" else tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return 0
    (size,) = struct.unpack_from("<I", tail, at + 12)
    # Like zipfile, believe zip64 records before the end record, whatever the latter says.
    if at >= 76 and tail[at - 20:at - 16] == b"PK\x06\x07" \
            and tail[at - 76:at - 72] == b"PK\x06\x06":
        (size,) = struct.unpack_from("<Q", tail, at - 76 + 40)
    return size


@contextmanager
def _plain_tar(source: Path, scratch: Path, max_bytes: int) -> Iterator[IO[bytes]]:
    """The tar stream, seekable: a gzip-compressed one is first decompressed to a temporary
    file, within `max_bytes`, so that reading its members never decompresses twice."""
    with source.open("rb") as raw:
        if raw.read(2) != b"\x1f\x8b":
            raw.seek(0)
            yield raw
            return
    with tempfile.TemporaryFile(dir=scratch) as plain, gzip.open(source) as unpacked:
        while chunk := _gunzip_chunk(unpacked):
            _check_size(plain.tell() + len(chunk), max_bytes)
            plain.write(chunk)
        plain.seek(0)
        yield plain


def _gunzip_chunk(unpacked: gzip.GzipFile) -> bytes:
    try:
        return unpacked.read(_CHUNK_BYTES)
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetFormatError(f"The upload is not a readable gzip-compressed archive: "
                                 f"{err}.", code="dataset_unreadable") from None


@contextmanager
def _tar(raw: IO[bytes]) -> Iterator[tarfile.TarFile]:
    try:
        archive = tarfile.open(fileobj=raw, mode="r:")  # noqa: SIM115 -- closed below
    except tarfile.TarError as err:
        raise DatasetFormatError(f"The upload is not a readable tar archive: {err}.",
                                 code="dataset_unreadable") from None
    with archive:
        yield archive


def _tar_infos(archive: tarfile.TarFile) -> list[tarfile.TarInfo]:
    infos: list[tarfile.TarInfo] = []
    try:
        while (info := archive.next()) is not None:
            if len(infos) == _MAX_MEMBERS:
                raise _too_many_members()
            infos.append(info)
    except tarfile.TarError as err:
        raise DatasetFormatError(f"The tar archive cannot be read to its end: {err}.",
                                 code="dataset_unreadable") from None
    return infos


def _safe_path(name: str) -> PurePosixPath | None:
    """`name` as a relative path, or None for what no saved dataset holds: absolute or
    parent-relative names, hidden files (macOS' ._ copies) and __MACOSX folders."""
    path = PurePosixPath(name)  # drops "." parts: `tar -C saved .` names "./data-...arrow"
    if path.is_absolute() or not path.parts:
        return None
    if any(part.startswith(".") or part == "__MACOSX" for part in path.parts):
        return None
    return path


def _dataset_shards(members: list[_Member], max_bytes: int) -> list[_Member]:
    """The shards of the one dataset folder in the archive, in their order."""
    folders: dict[PurePosixPath, dict[str, _Member]] = {}
    for member in members:
        folders.setdefault(member.path.parent, {})[member.path.name] = member
    saved = {folder: files for folder, files in folders.items()
                if _STATE in files or any(_SHARD.fullmatch(name) for name in files)}
    dict_files = [files[_DICT] for files in folders.values() if _DICT in files]
    if dict_files or len(saved) > 1:
        raise _dataset_dict(sorted(folder.name or "." for folder in saved), dict_files,
                            max_bytes)
    if not saved:
        shown = ", ".join(str(member.path) for member in members[:5]) or "nothing"
        more = f" and {len(members) - 5} more" if len(members) > 5 else ""
        raise DatasetFormatError(
            f"The archive holds no saved Hugging Face dataset (no folder in it has "
            f"{_STATE} or data-*.arrow files; it holds {shown}{more}): {_PACK_HINT}.",
            code="dataset_invalid_arrow")
    [(folder, files)] = saved.items()
    if _STATE not in files:
        return [files[name] for name in sorted(files) if _SHARD.fullmatch(name)]
    listed = _shard_names(_json_member(files[_STATE], max_bytes), files[_STATE])
    missing = [name for name in listed if name not in files]
    if missing:
        raise DatasetFormatError(
            f"{files[_STATE].label} lists {', '.join(missing)}, which the archive does not "
            f"hold in {str(folder) if folder.parts else 'its root'}: {_PACK_HINT}.",
            code="dataset_invalid_arrow")
    return [files[name] for name in listed]


def _shard_names(state: Any, member: _Member) -> list[str]:
    """The shards state.json lists; none for an empty dataset."""
    entries = state.get("_data_files") if isinstance(state, dict) else None
    names = [entry.get("filename") if isinstance(entry, dict) else None
             for entry in (entries if isinstance(entries, list) else ())]
    if not isinstance(entries, list) or not all(
            isinstance(name, str) and name.endswith(".arrow") and "/" not in name
            and "\\" not in name for name in names):
        raise DatasetFormatError(
            f'{member.label} has no "_data_files" list of {{"filename": "....arrow"}} as '
            f"Dataset.save_to_disk writes it: {_PACK_HINT}.", code="dataset_invalid_arrow")
    return names


def _dataset_dict(splits: list[str], dict_files: list[_Member],
                  max_bytes: int) -> DatasetFormatError:
    try:  # its own list of splits, where it has a readable one, is the one the user named
        declared = _json_member(dict_files[0], max_bytes) if dict_files else None
    except DatasetFormatError:
        declared = None
    named = declared.get("splits") if isinstance(declared, dict) else None
    if isinstance(named, list) and named and all(isinstance(split, str) for split in named):
        splits = named
    example = splits[0] if splits and splits[0] != "." else "train"
    return DatasetFormatError(
        f"The archive holds a DatasetDict with the splits {', '.join(splits) or '(none)'}; "
        "upload one split at a time: pack that split's folder alone, e.g. "
        f"`tar -cf {example}.tar -C saved {example}` where saved is the folder given to "
        "save_to_disk.", code="dataset_invalid_arrow")


def _json_member(member: _Member, max_bytes: int) -> Any:
    if member.size > _MAX_JSON_BYTES:
        raise DatasetFormatError(f"{member.label} is {member.size:,} bytes, more than a "
                                 f"saved dataset's JSON ever is: {_PACK_HINT}.",
                                 code="dataset_invalid_arrow")
    _check_size(member.size, max_bytes)
    try:
        with member.open() as raw:
            return json.loads(raw.read(_MAX_JSON_BYTES + 1))
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError alike
        raise DatasetFormatError(f"{member.label} is not valid JSON: {err}.",
                                 code="dataset_invalid_arrow") from None
    except _READ_ERRORS as err:
        raise _unreadable(member.label, err) from None


def _write_parquet(shards: list[_Member], target: Path, max_bytes: int) -> int:
    """Copies every shard's batches into one Parquet file; the number of rows written."""
    writer: pq.ParquetWriter | None = None
    first = ("", pa.schema([]))  # the first batch's shard and schema
    rows = decoded = 0
    try:
        for shard in shards:
            for batch in _batches(shard):
                if writer is None:
                    first = (shard.label, batch.schema)
                    writer = _parquet_writer(target, batch.schema)
                elif not batch.schema.equals(first[1], check_metadata=False):
                    raise DatasetFormatError(
                        f"The shards do not share one schema: {shard.label} has "
                        f"({_shown(batch.schema)}) but {first[0]} has ({_shown(first[1])}). "
                        "All shards of a dataset have the same columns and types.",
                        code="dataset_invalid_arrow")
                # Arrow's own buffer compression can unpack far beyond the bytes read.
                decoded += batch.nbytes
                _check_size(decoded, max_bytes)
                rows += batch.num_rows
                try:
                    writer.write_batch(batch)
                except pa.ArrowException as err:
                    raise _not_parquet(err, shard.label) from None
    finally:
        if writer is not None:
            writer.close()
    return rows


def _batches(shard: _Member) -> Iterator[pa.RecordBatch]:
    """The shard's record batches, one at a time. Only reading errors are caught here: the
    caller's writing errors are not reading's."""
    try:
        with shard.open() as raw:
            yield from _ipc_batches(raw, shard.label)
    except _READ_ERRORS as err:
        raise _unreadable(shard.label, err) from None


def _ipc_batches(raw: IO[bytes], label: str) -> Iterator[pa.RecordBatch]:
    """The Arrow IPC stream format that save_to_disk writes, or failing that the IPC file
    format; garbage fails either as ArrowInvalid or as a bare OSError."""
    try:
        return iter(pa.ipc.open_stream(raw))
    except (pa.ArrowException, OSError):
        raw.seek(0)
    try:
        whole = pa.ipc.open_file(raw)
    except (pa.ArrowException, OSError) as err:
        raise DatasetFormatError(
            f"{label} is not an Arrow file: it reads neither as the Arrow IPC stream format "
            f"that Dataset.save_to_disk writes nor as the IPC file format ({err}).",
            code="dataset_unreadable") from None
    return (whole.get_batch(index) for index in range(whole.num_record_batches))


def _parquet_writer(target: Path, schema: pa.Schema) -> pq.ParquetWriter:
    fields = [field.remove_metadata() for field in schema]
    features = _plain_features(schema)
    metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode()} \
        if features else None
    try:
        return pq.ParquetWriter(target, pa.schema(fields, metadata=metadata))
    except pa.ArrowException as err:
        raise _not_parquet(err) from None


def _plain_features(schema: pa.Schema) -> dict[str, Any] | None:
    """The `datasets` features stored with the schema when they name exactly its columns
    and only plain types: kept, they give the worker ClassLabel names and -1 as no label."""
    try:
        features = json.loads((schema.metadata or {})[b"huggingface"])["info"]["features"]
    except (KeyError, TypeError, ValueError):
        return None
    if isinstance(features, dict) and list(features) == schema.names \
            and all(_is_plain(feature) for feature in features.values()):
        return features
    return None


def _is_plain(feature: Any) -> bool:
    if isinstance(feature, list):  # an old-style sequence, [feature]
        return all(_is_plain(item) for item in feature)
    if not isinstance(feature, dict):
        return False
    kind = feature.get("_type")
    if kind is None:  # a struct: its fields
        return all(_is_plain(item) for item in feature.values())
    return kind in _PLAIN_FEATURES and ("feature" not in feature
                                        or _is_plain(feature["feature"]))


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise DatasetFormatError(f"The dataset comes to more than {max_bytes:,} bytes once "
                                 "unpacked, the most an upload may hold.",
                                 code="dataset_too_large")


def _too_many_members() -> DatasetFormatError:
    return DatasetFormatError(f"The archive holds more than {_MAX_MEMBERS:,} files; a saved "
                              f"dataset is its shards and two JSON files: {_PACK_HINT}.",
                              code="dataset_invalid_arrow")


def _shown(schema: pa.Schema) -> str:
    return ", ".join(f"{field.name}: {field.type}" for field in schema)


def _unreadable(label: str, err: BaseException) -> DatasetFormatError:
    return DatasetFormatError(f"{label} cannot be read to its end ({err}); it may be "
                              "truncated or damaged: save and upload it again.",
                              code="dataset_unreadable")


def _not_parquet(err: BaseException, label: str = "The dataset") -> DatasetFormatError:
    return DatasetFormatError(f"{label} has columns whose types cannot be stored as Parquet: "
                              f"{err}.", code="dataset_invalid_arrow")
