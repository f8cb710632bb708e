"""One way to send a stored file, whichever the store: Range, or a redirect when asked."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Query
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from app.artifacts.service import check_range
from app.storage import LocalStorage, StoredFile

RedirectQuery = Annotated[bool, Query(description=(
    "Answer 307 with a presigned URL of the object store (valid FT_PRESIGN_SECONDS) "
    "instead of streaming the file through the API. A local store has no such URL: "
    "the file is streamed as without it"))]


def send_file(storage: LocalStorage, file: StoredFile, range_header: str | None, *,
              filename: str, media_type: str, redirect: bool = False) -> Response:
    """The whole file (200), or the one range asked for (206), streamed from the store."""
    if redirect and (url := storage.presigned_url(file, filename)) is not None:
        return RedirectResponse(url, status_code=307)
    span = check_range(range_header, file.size)
    start, end = span or (0, file.size - 1)
    headers = {"accept-ranges": "bytes", "content-length": str(end - start + 1),
               "content-disposition": _disposition(filename)}
    if span is not None:
        headers["content-range"] = f"bytes {start}-{end}/{file.size}"
    # Opened here, in the route's thread: a store that cannot be read answers 503, not a
    # response cut short.
    body = storage.read(file, start, end) if file.size else iter(())
    return StreamingResponse(body, status_code=206 if span else 200, media_type=media_type,
                             headers=headers)


def _disposition(filename: str) -> str:
    quoted = quote(filename)
    return (f'attachment; filename="{filename}"' if quoted == filename
            else f"attachment; filename*=utf-8''{quoted}")
