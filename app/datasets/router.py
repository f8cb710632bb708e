from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.auth import CallerDep
from app.datasets import service
from app.datasets.formats import FORMATS
from app.datasets.layouts import DECLARABLE
from app.datasets.schemas import DatasetOut, DatasetPreview
from app.datasets.upload import receive_upload
from app.deps import SessionDep, SessionRoute, SettingsDep, StorageDep
from app.errors import error_responses
from app.idempotency import IdempotencyHeader
from app.models import Dataset
from app.pagination import AfterQuery, LimitQuery, Page
from app.params import DatasetId

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], route_class=SessionRoute)

@router.post("", status_code=201, response_model=DatasetOut,
             responses=error_responses(400, 409, 413, 422, 503, 507),
             openapi_extra={"requestBody": {"required": True, "content": {
                 "multipart/form-data": {"schema": {
                     "type": "object", "required": ["file"],
                     "properties": {
                         "file": {"type": "string", "format": "binary"},
                         "name": {"type": "string"},
                         "format": {"type": "string",
                                    "enum": list(FORMATS)},
                         "layout": {"type": "string", "enum": list(DECLARABLE)},
                     }}}}}})
async def upload_dataset(request: Request, caller: CallerDep, session: SessionDep,
                         settings: SettingsDep, storage: StorageDep,
                         idempotency_key: IdempotencyHeader = None) -> DatasetOut:
    """Upload a dataset file as field `file`: CSV, TSV, JSON Lines, JSON, Parquet, CoNLL,
    SQuAD JSON or Hugging Face Arrow (a `.arrow` file or a `save_to_disk` folder as `.tar` or
    `.zip`). Its layout (Alpaca, ShareGPT, chats, preference pairs...) is recognised from its
    columns, or named by field `layout`. With an object store (FT_STORAGE_URL) the checked
    file is sent to it before the dataset exists: 503 `storage_unavailable` when it cannot be
    reached, and nothing is kept. 507 `storage_full`: the service's disk had no room for the
    file; nothing is kept."""
    upload = await receive_upload(request, storage.temp_path(), settings.max_upload_bytes)
    try:
        dataset = await run_in_threadpool(
            service.create, session, caller, storage, upload_path=upload.path,
            filename=upload.filename, size_bytes=upload.size_bytes, sha256=upload.sha256,
            name=upload.fields.get("name"), declared_format=upload.fields.get("format"),
            declared_layout=upload.fields.get("layout"),
            max_bytes=settings.max_upload_bytes, idempotency_key=idempotency_key)
    finally:  # published files have moved away; anything left here was refused
        upload.path.unlink(missing_ok=True)
    return _out(dataset)


@router.get("", response_model=Page[DatasetOut], responses=error_responses(422))
def list_datasets(caller: CallerDep, session: SessionDep, limit: LimitQuery = 20,
                  after: AfterQuery = None) -> Page[DatasetOut]:
    """List the project's datasets (an admin's: every project's), newest first."""
    items, has_more = service.list_page(session, caller, limit, after)
    return Page[DatasetOut](data=[_out(d) for d in items], has_more=has_more)


@router.get("/{dataset_id}", response_model=DatasetOut, responses=error_responses(404))
def get_dataset(dataset_id: DatasetId, caller: CallerDep, session: SessionDep) -> DatasetOut:
    """Get one dataset with its inspected columns."""
    return _out(service.get(session, caller, dataset_id))


@router.get("/{dataset_id}/preview", response_model=DatasetPreview,
            responses=error_responses(404, 422))
def preview_dataset(dataset_id: DatasetId, caller: CallerDep, session: SessionDep,
                    storage: StorageDep,
                    limit: Annotated[int, Query(ge=1, le=100)] = 10) -> DatasetPreview:
    """The first rows of a dataset."""
    dataset, rows = service.preview(session, caller, storage, dataset_id, limit)
    return DatasetPreview(dataset_id=dataset.id, columns=dataset.columns, rows=rows)


@router.delete("/{dataset_id}", status_code=204, responses=error_responses(404, 409))
def delete_dataset(dataset_id: DatasetId, caller: CallerDep, session: SessionDep,
                   storage: StorageDep) -> Response:
    """Delete a dataset; refused while a queued or running job uses it."""
    service.delete(session, caller, storage, dataset_id)
    return Response(status_code=204)


def _out(dataset: Dataset) -> DatasetOut:
    return DatasetOut.model_validate(dataset).model_copy(update={"fits": service.fits(dataset)})
