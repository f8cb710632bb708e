from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from app.artifacts import service
from app.artifacts.downloads import RedirectQuery, send_file
from app.auth import CallerDep
from app.deps import SessionDep, SessionRoute, StorageDep
from app.errors import error_responses
from app.params import JobId

router = APIRouter(prefix="/v1/jobs", tags=["artifacts"], route_class=SessionRoute)

def _file_responses(media_type: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {media_type: {}},
                  "description": "The file; HTTP Range requests are supported"},
            206: {"content": {media_type: {}},
                  "description": "Partial content for a Range request"},
            307: {"description": "With `redirect=true` on an object store: the file is at "
                                 "the presigned URL in Location",
                  "headers": {"Location": {"schema": {"type": "string"}}}},
            **error_responses(400, 404, 409, 416, 503)}


class ArtifactOut(BaseModel):
    path: str
    size_bytes: int
    sha256: str


class ArtifactList(BaseModel):
    data: list[ArtifactOut]
    has_more: bool = False


@router.get("/{job_id}/artifacts", response_model=ArtifactList, responses=error_responses(404))
def list_artifacts(job_id: JobId, caller: CallerDep, session: SessionDep) -> ArtifactList:
    """The files of the job's model folder, with sizes and sha256."""
    artifacts = service.list_for_job(session, caller, job_id)
    return ArtifactList(data=[ArtifactOut(path=a.path, size_bytes=a.size_bytes, sha256=a.sha256)
                              for a in artifacts])


@router.get("/{job_id}/artifacts/{path:path}", response_class=StreamingResponse,
            responses=_file_responses("application/octet-stream"))
def download_artifact(job_id: JobId, path: str, request: Request, caller: CallerDep,
                      session: SessionDep, storage: StorageDep,
                      redirect: RedirectQuery = False) -> Response:
    """One file of the model folder."""
    file = service.stored_artifact(session, caller, storage, job_id, path)
    return send_file(storage, file, request.headers.get("range"), redirect=redirect,
                     filename=PurePosixPath(path).name, media_type="application/octet-stream")


@router.get("/{job_id}/model", response_class=StreamingResponse,
            responses=_file_responses("application/gzip"))
def download_model(job_id: JobId, request: Request, caller: CallerDep, session: SessionDep,
                   storage: StorageDep, redirect: RedirectQuery = False) -> Response:
    """The whole model folder as one .tar.gz; `from_pretrained` loads it once unpacked."""
    archive = service.stored_archive(session, caller, storage, job_id)
    return send_file(storage, archive, request.headers.get("range"), redirect=redirect,
                     filename=f"{job_id}-model.tar.gz", media_type="application/gzip")
