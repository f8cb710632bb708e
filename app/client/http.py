"""ApiClient: the service's HTTP API as Python methods, for the CLI and for scripts.

A failure of the service or of a download surfaces as one of three exceptions: `ApiError`
(the service answered with its error body), `ServiceUnreachable` (no answer at all) or
`DownloadError` (a model archive that does not unpack to exactly the files of the job's
manifest). `StreamRefused` says that the service has no live stream to offer (an older one):
the caller polls instead.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Self

import httpx

from app.client import DEFAULT_URL
from app.client.archive import DownloadError, unpack_verified
from app.client.sse import EventStreamParser, ServerSentEvent

TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")
_CHUNK = 1024 * 1024
# Generous for a busy service; connecting stays quick so that a wrong URL is reported at once.
_TIMEOUT = httpx.Timeout(120.0, connect=5.0)
# The API reads a whole upload through before it answers, which takes minutes for gigabytes.
_UPLOAD_TIMEOUT = httpx.Timeout(None, connect=5.0)
# A live stream sends a heartbeat every 15 s: a minute of silence is a dead connection.
_STREAM_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
_RECONNECT_SECONDS = 1.0

Json = dict[str, Any]
ProgressCallback = Callable[[int, int | None], None]

__all__ = ["DEFAULT_URL", "TERMINAL_STATUSES", "ApiClient", "ApiError", "DownloadError",
           "ServerSentEvent", "ServiceUnreachable", "StreamRefused"]


class ApiError(Exception):
    """The service answered 4xx/5xx; `code`, `message` and `param` come from its error body."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.param = param


class ServiceUnreachable(Exception):
    """No HTTP answer from `url`: nothing listens there, DNS failed, or the connection broke."""

    def __init__(self, url: str, reason: str = "") -> None:
        super().__init__(f"cannot reach the service at {url}" + (f" ({reason})" if reason else ""))
        self.url = url
        self.reason = reason


class StreamRefused(Exception):
    """The service answered a live stream's first request with an error or with no stream."""


class ApiClient:
    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None,
                 timeout: httpx.Timeout = _TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # Datasets

    def upload_dataset(self, path: Path, *, name: str | None = None,
                       format: str | None = None, layout: str | None = None) -> Json:
        fields = {key: value for key, value in (("name", name), ("format", format),
                                                ("layout", layout)) if value}
        with path.open("rb") as stream:
            return self._json("POST", "/v1/datasets", files={"file": (path.name, stream)},
                              data=fields, timeout=_UPLOAD_TIMEOUT)

    def list_datasets(self, *, limit: int = 20, after: str | None = None) -> Json:
        return self._json("GET", "/v1/datasets", params=_params(limit=limit, after=after))

    def get_dataset(self, dataset_id: str) -> Json:
        return self._json("GET", f"/v1/datasets/{dataset_id}")

    def preview(self, dataset_id: str, *, limit: int = 10) -> Json:
        return self._json("GET", f"/v1/datasets/{dataset_id}/preview", params={"limit": limit})

    # Jobs

    def submit_job(self, spec: Json) -> Json:
        return self._json("POST", "/v1/jobs", json=spec)

    def list_jobs(self, *, status: str | None = None, limit: int = 20,
                  after: str | None = None) -> Json:
        return self._json("GET", "/v1/jobs", params=_params(status=status, limit=limit,
                                                             after=after))

    def get_job(self, job_id: str) -> Json:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def events(self, job_id: str, *, after: int | None = None, limit: int = 1000) -> Json:
        return self._json("GET", f"/v1/jobs/{job_id}/events",
                          params=_params(after=after, limit=limit))

    def all_events(self, job_id: str, *, after: int | None = None) -> list[Json]:
        """Every event after `after`, following the pages to the end."""
        events: list[Json] = []
        while True:
            page = self.events(job_id, after=after)
            events.extend(page["data"])
            if not page["has_more"] or not page["data"]:
                return events
            after = page["data"][-1]["id"]

    def metrics(self, job_id: str) -> Json:
        return self._json("GET", f"/v1/jobs/{job_id}/metrics")

    def cancel(self, job_id: str) -> Json:
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")

    def artifacts(self, job_id: str) -> Json:
        return self._json("GET", f"/v1/jobs/{job_id}/artifacts")

    def job_stream(self, job_id: str, *,
                   patience_seconds: float = 60.0) -> Iterator[ServerSentEvent]:
        """The job's live stream: its events (`event`), metric points (`metric`) and
        heartbeats (blocks whose `event` is None), to its `end` message, which comes last.

        Once connected, a dropped connection, no answer or a 5xx is resumed with
        Last-Event-ID for up to `patience_seconds`, so the stream goes on without loss or
        repeat across an API restart. A service that cannot be reached at first is
        ServiceUnreachable at once; one that refuses the first request (an older service, a
        job that does not exist) is StreamRefused: the caller then polls, and hears why
        from that.
        """
        parser = EventStreamParser()
        failing_since: float | None = None
        first = True
        while True:
            headers = {"Accept": "text/event-stream"}
            if parser.last_id:
                headers["Last-Event-ID"] = parser.last_id
            try:
                with self._http.stream("GET", f"/v1/jobs/{job_id}/events",
                                       params={"stream": "true"}, headers=headers,
                                       timeout=_STREAM_TIMEOUT) as response:
                    self._check_stream(response, first)
                    first = False
                    for line in response.iter_lines():
                        block = parser.feed(line)
                        if block is None:
                            continue
                        failing_since = None
                        yield block
                        if block.event == "end":
                            return
            except (httpx.TransportError, _Retryable) as error:
                failing_since = failing_since or time.monotonic()
                if first or time.monotonic() - failing_since > patience_seconds:
                    if isinstance(error, _Retryable):
                        raise error.api_error from None
                    raise ServiceUnreachable(self.base_url, _reason(error)) from error
            time.sleep(parser.retry_seconds or _RECONNECT_SECONDS)

    @staticmethod
    def _check_stream(response: httpx.Response, first: bool) -> None:
        if response.is_error:
            response.read()
            try:
                _raise_for_error(response)
            except ApiError as refused:
                if first:
                    raise StreamRefused(str(refused)) from refused
                if refused.status >= 500 or refused.status == 429:
                    raise _Retryable(refused) from refused
                raise
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            raise StreamRefused(f"the service answered {response.headers.get('content-type')}"
                                " instead of an event stream")

    def wait(self, job_id: str, on_update: Callable[[Json], None] | None = None, *,
             poll_seconds: float = 1.0, patience_seconds: float = 60.0) -> Json:
        """Follow the job until it is succeeded, failed or cancelled; answer the final job.

        The job's live stream says when something happens; the job is then read again for
        `on_update` (at once for an event, at most every `poll_seconds` for metrics and
        heartbeats). A service without streams, or one the stream cannot reach any more, is
        polled every `poll_seconds`. No answer or a 5xx is retried for up to
        `patience_seconds`, so that a restarting API or a busy database does not end a wait
        of hours.
        """
        def read() -> Json:
            return self._job_patiently(job_id, poll_seconds, patience_seconds)

        show = on_update or (lambda job: None)
        try:
            shown_at = -math.inf
            for block in self.job_stream(job_id, patience_seconds=patience_seconds):
                if block.event == "end":
                    break
                if block.event == "event" or time.monotonic() - shown_at >= poll_seconds:
                    show(read())
                    shown_at = time.monotonic()
        except (StreamRefused, ServiceUnreachable):
            while (job := read())["status"] not in TERMINAL_STATUSES:
                show(job)
                time.sleep(poll_seconds)
            show(job)
            return job
        final = read()
        show(final)
        return final

    def _job_patiently(self, job_id: str, retry_seconds: float,
                       patience_seconds: float) -> Json:
        failing_since: float | None = None
        while True:
            try:
                return self.get_job(job_id)
            except (ServiceUnreachable, ApiError) as exc:
                if isinstance(exc, ApiError) and exc.status < 500:
                    raise
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > patience_seconds:
                    raise
                time.sleep(retry_seconds)

    def download_model(self, job_id: str, dest: Path,
                       on_progress: ProgressCallback | None = None) -> Path:
        """Download the job's model into the new folder `dest`, every file checked by sha256.

        The archive and the unpacked files stay in a hidden temporary folder next to `dest`
        until every check has passed, so `dest` either appears complete or not at all.
        """
        dest = dest.absolute()
        if dest.exists():
            raise DownloadError(f"{dest} already exists; choose another folder or remove it")
        dest.parent.mkdir(parents=True, exist_ok=True)
        manifest = {item["path"]: item["sha256"] for item in self.artifacts(job_id)["data"]}
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as staging:
            archive = Path(staging) / "model.tar.gz"
            with archive.open("wb") as sink:
                self._stream_to(f"/v1/jobs/{job_id}/model", sink, on_progress)
            unpacked = unpack_verified(archive, Path(staging) / "unpacked", manifest)
            if dest.exists():
                raise DownloadError(f"{dest} appeared during the download; nothing was written")
            unpacked.rename(dest)
        return dest

    # Plumbing

    def _json(self, method: str, path: str, **kwargs: Any) -> Json:
        with self._transport_errors():
            response = self._http.request(method, path, **kwargs)
        _raise_for_error(response)
        try:
            body: Json = response.json()
        except json.JSONDecodeError as exc:
            raise ApiError(response.status_code, "invalid_response",
                           f"{method} {path} answered something that is not JSON") from exc
        return body

    def _stream_to(self, path: str, sink: BinaryIO, on_progress: ProgressCallback | None) -> None:
        with self._transport_errors(), self._http.stream("GET", path) as response:
            if response.is_error:
                response.read()
                _raise_for_error(response)
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            for chunk in response.iter_bytes(_CHUNK):
                sink.write(chunk)
                received += len(chunk)
                if on_progress is not None:
                    on_progress(received, total)
        if total is not None and received != total:
            raise DownloadError(f"the download stopped after {received} of {total} bytes")

    @contextmanager
    def _transport_errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.TransportError as error:
            raise ServiceUnreachable(self.base_url, _reason(error)) from error


def _reason(error: httpx.TransportError) -> str:
    text = str(error)
    # httpx wraps OS errors as "[Errno 111] Connection refused"; the errno is noise here.
    if text.startswith("[Errno") and "] " in text:
        text = text.split("] ", 1)[1]
    return text.lower() or type(error).__name__


class _Retryable(Exception):
    """A stream's reconnect answered 5xx or 429: try again while patience lasts."""

    def __init__(self, api_error: ApiError) -> None:
        super().__init__(str(api_error))
        self.api_error = api_error


def _raise_for_error(response: httpx.Response) -> None:
    if not response.is_error:
        return
    try:
        detail = response.json()["error"]
        code, message, param = detail["code"], detail["message"], detail.get("param")
    except (json.JSONDecodeError, KeyError, TypeError):
        # Not the service's error body: a proxy or another server answered.
        code, message, param = f"http_{response.status_code}", response.text[:200].strip(), None
    raise ApiError(response.status_code, code, message or response.reason_phrase, param)


def _params(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}

