"""OpenAI's files and fine-tuning routes beside the native ones, under the same /v1 and key:
`OpenAI(base_url="<service>/v1", api_key=<project key>)` drives them unchanged."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.artifacts.downloads import RedirectQuery, send_file
from app.auth import CallerDep, authenticate
from app.datasets import service as datasets
from app.datasets.upload import receive_upload
from app.deps import ReadSessionDep, SessionDep, SettingsDep, StorageDep
from app.errors import InvalidRequest, NotFound
from app.jobs import service as jobs
from app.openai_compat import files, timeline
from app.openai_compat import jobs as openai_jobs
from app.openai_compat.errors import OpenAIRoute, UnsupportedByService
from app.openai_compat.examples import common_errors, responses
from app.openai_compat.schemas import (
    METADATA_KEY,
    METADATA_VALUE,
    FileDeleted,
    FileObject,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobCreate,
    FineTuningJobEvent,
    ListPage,
)
from app.pagination import AfterQuery, LimitQuery
from app.params import is_id, reject_unknown_query_parameters

JOBS_PATH = "/v1/fine_tuning/jobs"
_METADATA_FILTER = re.compile(rf"^metadata\[({METADATA_KEY})\]$")

CursorQuery = Annotated[str | None, Query(max_length=64,
                                          description="Id of the last item of the previous page")]


async def _only_known_query(request: Request) -> None:
    """The native check for misspelt query parameters; the jobs list also takes OpenAI's
    `metadata[key]=value` filters."""
    if request.scope["route"].path == JOBS_PATH:
        plain = [(name, value) for name, value in request.query_params.multi_items()
                 if not _METADATA_FILTER.fullmatch(name)]
        request = Request({**request.scope, "query_string": urlencode(plain).encode()})
    await reject_unknown_query_parameters(request)


router = APIRouter(prefix="/v1", tags=["openai-compatible"], route_class=OpenAIRoute,
                   dependencies=[Depends(authenticate), Depends(_only_known_query)],
                   responses=common_errors())


_UPLOAD_BODY = {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "purpose"],
    "properties": {"file": {"type": "string", "format": "binary"},
                   "purpose": {"type": "string", "enum": [files.FINE_TUNE]}}}}}}


@router.post("/files", response_model=FileObject,
             responses=responses("post", "/files", "file", 400, 409, 413),
             openapi_extra={"requestBody": _UPLOAD_BODY})
async def create_file(request: Request, caller: CallerDep, session: SessionDep,
                      settings: SettingsDep, storage: StorageDep) -> FileObject:
    """Upload a file for fine-tuning (purpose `fine-tune`): it becomes a dataset, `ds_…`.
    Chat JSON Lines (`messages`) and prompt/completion JSON Lines are what jobs here train on."""
    upload = await receive_upload(request, storage.temp_path(), settings.max_upload_bytes)
    try:
        files.check_upload_fields(upload.fields)
        dataset = await run_in_threadpool(
            datasets.create, session, caller, storage, upload_path=upload.path,
            filename=upload.filename, size_bytes=upload.size_bytes, sha256=upload.sha256,
            name=upload.fields.get("name"), declared_format=upload.fields.get("format"),
            declared_layout=upload.fields.get("layout"), max_bytes=settings.max_upload_bytes)
    finally:  # published files have moved away; anything left here was refused
        upload.path.unlink(missing_ok=True)
    return files.file_object(dataset)


@router.get("/files", response_model=ListPage[FileObject],
            responses=responses("get", "/files", "files"))
def list_files(caller: CallerDep, session: SessionDep, purpose: str | None = None,
               limit: Annotated[int, Query(ge=1, le=10_000)] = 100, after: AfterQuery = None,
               order: Literal["asc", "desc"] = "desc") -> ListPage[FileObject]:
    """The project's uploads, newest first; `purpose=fine-tune-results` lists the result files
    of finished jobs instead."""
    if order != "desc":
        raise UnsupportedByService("files are listed newest first only (order 'desc')",
                                   code="unsupported_parameter", param="order")
    items, has_more = files.list_page(session, caller, purpose, limit, after)
    return ListPage[FileObject].of(items, has_more)


@router.get("/files/{file_id}", response_model=FileObject,
            responses=responses("get", "/files/{file_id}", "file"))
def retrieve_file(file_id: str, caller: CallerDep, session: SessionDep) -> FileObject:
    return files.retrieve(session, caller, file_id)


@router.delete("/files/{file_id}", response_model=FileDeleted,
               responses=responses("delete", "/files/{file_id}", "deleted", 409))
def delete_file(file_id: str, caller: CallerDep, session: SessionDep,
                storage: StorageDep) -> FileDeleted:
    """Delete an upload; refused while a queued or running job trains on it."""
    files.delete(session, caller, storage, file_id)
    return FileDeleted(id=file_id, deleted=True)


@router.get("/files/{file_id}/content", response_class=Response,
            responses={**responses("get", "/files/{file_id}/content", None),
                       200: {"content": {"application/octet-stream": {}, "text/csv": {}}},
                       206: {"content": {"application/octet-stream": {}},
                             "description": "Partial content for a Range request"},
                       307: {"description": "With `redirect=true` on an object store: the "
                                            "file is at the presigned URL in Location"}})
def file_content(file_id: str, request: Request, caller: CallerDep, session: SessionDep,
                 storage: StorageDep, redirect: RedirectQuery = False) -> Response:
    """The stored file (HTTP Range requests are supported), or a result file's CSV (plain
    text, not base64)."""
    if files.is_result_file(file_id):
        _, content = files.result_file(session, caller, file_id)
        return Response(content, media_type="text/csv")
    file, filename = files.stored_file(session, caller, storage, file_id)
    return send_file(storage, file, request.headers.get("range"), filename=filename,
                     media_type="application/octet-stream", redirect=redirect)


@router.post("/fine_tuning/jobs", response_model=FineTuningJob,
             responses=responses("post", "/fine_tuning/jobs", "queued job", 400, 409))
def create_job(body: FineTuningJobCreate, request: Request, caller: CallerDep,
               session: SessionDep, settings: SettingsDep) -> FineTuningJob:
    """Fine-tune `model` on a chat or prompt/completion file: a native causal-lm job."""
    job = openai_jobs.create(session, caller, body, request.app.state.broker.enqueue, settings)
    return openai_jobs.openai_jobs(session, [job])[0]


@router.get("/fine_tuning/jobs", response_model=ListPage[FineTuningJob],
            responses=responses("get", "/fine_tuning/jobs", "jobs"),
            openapi_extra={"parameters": [{
                "name": "metadata", "in": "query", "style": "deepObject", "explode": True,
                "schema": {"type": "object", "additionalProperties": {"type": "string"}},
                "description": "Only jobs with these metadata pairs: metadata[key]=value"}]})
def list_jobs(request: Request, caller: CallerDep, session: SessionDep,
              limit: LimitQuery = 20, after: AfterQuery = None) -> ListPage[FineTuningJob]:
    """The project's jobs (an admin's: every project's), newest first; every native job too."""
    found, has_more = openai_jobs.list_page(session, caller, limit, after,
                                            _metadata_filter(request))
    return ListPage[FineTuningJob].of(openai_jobs.openai_jobs(session, found), has_more)


@router.get("/fine_tuning/jobs/{job_id}", response_model=FineTuningJob,
            responses=responses("get", "/fine_tuning/jobs/{job_id}", "job"))
def retrieve_job(job_id: str, caller: CallerDep, session: ReadSessionDep) -> FineTuningJob:
    return openai_jobs.openai_jobs(session, [jobs.get(session, caller, _known(job_id))])[0]


@router.post("/fine_tuning/jobs/{job_id}/cancel", response_model=FineTuningJob,
             responses=responses("post", "/fine_tuning/jobs/{job_id}/cancel", "cancelled job",
                                 409))
def cancel_job(job_id: str, caller: CallerDep, session: SessionDep) -> FineTuningJob:
    """A queued job never starts; a running one stops at its next step (`running` until then)."""
    return openai_jobs.openai_jobs(session, [jobs.cancel(session, caller, _known(job_id))])[0]


# Not part of this service's API (no schema): OpenAI's clients get a reason, not a bare 404.
@router.post("/fine_tuning/jobs/{job_id}/pause", include_in_schema=False)
@router.post("/fine_tuning/jobs/{job_id}/resume", include_in_schema=False)
def pause_or_resume_job(job_id: str, caller: CallerDep, session: SessionDep) -> None:
    jobs.get(session, caller, _known(job_id))
    raise UnsupportedByService("jobs cannot be paused here; cancel the job instead (a job "
                               "interrupted by a worker's shutdown resumes by itself from its "
                               "last checkpoint)", code="unsupported_operation")


@router.get("/fine_tuning/jobs/{job_id}/events", response_model=ListPage[FineTuningJobEvent],
            responses=responses("get", "/fine_tuning/jobs/{job_id}/events", "events"))
def list_job_events(job_id: str, caller: CallerDep, session: SessionDep,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
                    after: CursorQuery = None) -> ListPage[FineTuningJobEvent]:
    """The timeline and the training-loss points, newest first."""
    items, has_more = timeline.events_page(session, caller, _known(job_id), after, limit)
    return ListPage[FineTuningJobEvent].of(items, has_more)


@router.get("/fine_tuning/jobs/{job_id}/checkpoints",
            response_model=ListPage[FineTuningJobCheckpoint],
            responses=responses("get", "/fine_tuning/jobs/{job_id}/checkpoints", "checkpoints"))
def list_job_checkpoints(job_id: str, caller: CallerDep, session: SessionDep,
                         limit: Annotated[int, Query(ge=1, le=100)] = 10,
                         after: CursorQuery = None) -> ListPage[FineTuningJobCheckpoint]:
    """The checkpoints kept for resuming (about one an epoch, the latest two and the best),
    newest first."""
    items, has_more = timeline.checkpoints_page(session, caller, _known(job_id), after, limit)
    return ListPage[FineTuningJobCheckpoint].of(items, has_more)


def _metadata_filter(request: Request) -> dict[str, str]:
    pairs = {}
    for name, value in request.query_params.multi_items():
        if (match := _METADATA_FILTER.fullmatch(name)) is not None:
            if not re.fullmatch(METADATA_VALUE, value):
                raise InvalidRequest(f"{name} cannot hold a NUL character", param=name)
            pairs[match.group(1)] = value
    return pairs


def _known(job_id: str) -> str:
    """A path id of the shape every id has; any other is no job's (a 404, as OpenAI answers)."""
    if not is_id(job_id):
        raise NotFound(f"no job with id {job_id!r}", param="job_id")
    return job_id
