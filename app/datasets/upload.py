"""Stream a multipart upload straight to a file in the store, hashing and counting as it comes.

Starlette's form parser would spool the whole file to a temporary file before the route
runs; here the bytes go to their final disk once, the size limit is enforced while the body
streams, and the partial file is removed on every failure (a full disk answers 507
`storage_full`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from anyio import to_thread
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from app.errors import InvalidRequest, PayloadTooLarge, ServiceError
from app.storage.local import is_disk_full, storage_full

MAX_FIELD_BYTES = 4096
MAX_PARTS = 16


class InvalidMultipart(ServiceError):
    status_code = 400
    code = "invalid_multipart"


@dataclass
class ReceivedUpload:
    path: Path
    size_bytes: int = 0
    sha256: str = ""
    filename: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    is_file: bool = False
    value: bytearray = field(default_factory=bytearray)


class _UploadParser:
    """Callbacks for python-multipart: file bytes are queued, then written off the event loop."""

    def __init__(self, file_field: str, max_bytes: int) -> None:
        self.file_field = file_field
        self.max_bytes = max_bytes
        self.part = _Part()
        self.parts = 0
        self.header_name = b""
        self.header_value = b""
        self.pending: list[bytes] = []
        self.file_size = 0
        self.file_seen = False
        self.filename: str | None = None
        self.fields: dict[str, str] = {}

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end, "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise InvalidMultipart(f"too many form parts (at most {MAX_PARTS})")
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.part.headers[self.header_name.lower()] = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.part.headers.get(b"content-disposition"))
        self.part.name = options.get(b"name", b"").decode("utf-8", "replace")
        if self.part.name == self.file_field:
            if self.file_seen:
                raise InvalidMultipart(f"send one '{self.file_field}' part", param="file")
            self.file_seen = True
            self.part.is_file = True
            raw_name = options.get(b"filename")
            self.filename = raw_name.decode("utf-8", "replace") if raw_name else None

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.part.is_file:
            self.file_size += len(chunk)
            if self.file_size > self.max_bytes:
                raise PayloadTooLarge(
                    f"the file is larger than the limit of {self.max_bytes} bytes "
                    "(FT_MAX_UPLOAD_BYTES)", param="file", code="upload_too_large")
            self.pending.append(chunk)
        else:
            self.part.value.extend(chunk)
            if len(self.part.value) > MAX_FIELD_BYTES:
                raise InvalidRequest(f"form field '{self.part.name}' is too long",
                                     param=self.part.name or None)

    def on_part_end(self) -> None:
        if not self.part.is_file and self.part.name:
            self.fields[self.part.name] = self.part.value.decode("utf-8", "replace")


async def receive_upload(request: Request, target: Path, max_bytes: int,
                         file_field: str = "file") -> ReceivedUpload:
    """Write the `file_field` part of a multipart body to `target`; remove it on any failure."""
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise InvalidMultipart("send the dataset as multipart/form-data with a 'file' part",
                               param="file")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
        raise PayloadTooLarge(f"the upload is larger than the limit of {max_bytes} bytes "
                              "(FT_MAX_UPLOAD_BYTES)", param="file", code="upload_too_large")
    parser_state = _UploadParser(file_field, max_bytes)
    parser = MultipartParser(options[b"boundary"], parser_state.callbacks())  # type: ignore[arg-type]
    digest = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with target.open("wb") as sink:
            async for chunk in request.stream():
                _feed(parser, chunk)
                await _flush(parser_state, sink, digest)
            _finalize(parser)
            await _flush(parser_state, sink, digest)
    except ClientDisconnect:
        target.unlink(missing_ok=True)
        raise InvalidMultipart("the client disconnected before the upload finished") from None
    except OSError as exc:
        target.unlink(missing_ok=True)
        if is_disk_full(exc, target.parent):
            raise storage_full(target.parent, "receiving the upload") from None
        raise
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if not parser_state.file_seen:
        target.unlink(missing_ok=True)
        raise InvalidRequest(f"the form has no '{file_field}' part", param=file_field)
    return ReceivedUpload(path=target, size_bytes=parser_state.file_size,
                          sha256=digest.hexdigest(), filename=parser_state.filename,
                          fields=parser_state.fields)


def _feed(parser: MultipartParser, chunk: bytes) -> None:
    try:
        parser.write(chunk)
    except ServiceError:
        raise
    except Exception as exc:
        raise InvalidMultipart(f"the multipart body is malformed: {exc}") from None


def _finalize(parser: MultipartParser) -> None:
    try:
        parser.finalize()
    except Exception as exc:
        raise InvalidMultipart(f"the multipart body is incomplete: {exc}") from None


async def _flush(state: _UploadParser, sink: BinaryIO, digest: Any) -> None:
    if not state.pending:
        return
    data = b"".join(state.pending)
    state.pending.clear()
    digest.update(data)
    await to_thread.run_sync(sink.write, data)
