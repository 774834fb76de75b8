"""``/datasets``: queue a synthetic dataset, follow it, download its zip, cancel or delete it."""

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Response, status
from fastapi.responses import FileResponse

from service.api.deps import ContextDep, OwnDatasetDep, OwnerDep
from service.api.responses import errors
from service.datasets import create_dataset, delete_dataset, list_datasets
from service.schemas import DatasetCreate, DatasetCreated, DatasetList, DatasetPublic
from service.status import public
from worker.jobs import bundle_path

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses=errors(400, 401, 409, 413, 429),
)
def post_dataset(
    body: DatasetCreate,
    context: ContextDep,
    owner: OwnerDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> DatasetCreated:
    """Queue a dataset of ``n`` samples. The same ``Idempotency-Key`` with the same body returns the
    dataset that key made (409 with another body)."""
    dataset = public(context, create_dataset(context, owner, body, idempotency_key))
    response.headers["Location"] = f"/datasets/{dataset.id}"
    return DatasetCreated(id=dataset.id, state=dataset.state, status_url=f"/datasets/{dataset.id}")


@router.get("", responses=errors(401))
def get_datasets(
    context: ContextDep, owner: OwnerDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> DatasetList:
    """The caller's datasets, newest first (at most ``limit``)."""
    return DatasetList(datasets=[public(context, record) for record in list_datasets(context, owner, limit)])


@router.get("/{dataset_id}", responses=errors(401, 404))
def get_dataset(context: ContextDep, record: OwnDatasetDep) -> DatasetPublic:
    """State, progress, error and, once finished, the download URL and the zip's sha256 and size."""
    return public(context, record)


@router.get(
    "/{dataset_id}/download",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/zip": {}}, "description": "The whole zip"},
        206: {"content": {"application/zip": {}}, "description": "The requested byte range"},
        304: {"description": "The zip the If-None-Match names: not sent again"},
        **errors(401, 404, 409),
        416: {"content": {"text/plain": {}}, "description": "Range not satisfiable"},
    },
)
def download_dataset(
    context: ContextDep,
    record: OwnDatasetDep,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> Response:
    """The finished zip, streamed; ``Range: bytes=a-b`` / ``bytes=a-`` answer 206 with that part, so a
    broken download resumes. ``ETag`` and ``X-Content-SHA256`` carry the whole zip's sha256; an
    ``If-None-Match`` that names it (or ``*``) answers 304 without the body."""
    if record.state != "finished" or record.sha256 is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"dataset_id: dataset {record.id!r} is {record.state}; download it when it is finished",
        )
    path = bundle_path(context.settings, record.id)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"dataset_id: the bundle of {record.id!r} was removed"
        ) from None
    headers = {"ETag": f'"{record.sha256}"', "X-Content-SHA256": record.sha256}
    if if_none_match is not None and _matches(if_none_match, headers["ETag"]):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return FileResponse(
        path, media_type="application/zip", filename=path.name, headers=headers, stat_result=stat
    )


def _matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` list names ``etag`` (weak or strong) or is ``*``."""
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 404))
def remove_dataset(context: ContextDep, record: OwnDatasetDep) -> Response:
    """Cancel a queued or running dataset (then ``cancelled``) or delete an ended one (then 404);
    its files are removed either way."""
    delete_dataset(context, record)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
