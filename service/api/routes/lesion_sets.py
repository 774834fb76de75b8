"""``/lesion-sets``: upload label NIfTI files to draw a dataset's lesions from, list and delete them."""

from typing import Annotated

from fastapi import APIRouter, File, Request, Response, UploadFile, status

from service.api.deps import ContextDep, OwnerDep, OwnLesionSetDep, ParsePoolDep
from service.api.responses import errors
from service.lesion_sets import save_lesion_set
from service.schemas import LesionSetList, LesionSetPublic
from service.store import LESION_SETS, LesionSetRecord
from service.uploads import delete_upload

router = APIRouter(prefix="/lesion-sets", tags=["lesion sets"])


def _public(record: LesionSetRecord) -> LesionSetPublic:
    return LesionSetPublic.model_validate(record.model_dump(exclude={"owner"}))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=errors(400, 401, 409, 413, 503),
)
async def post_lesion_set(
    files: Annotated[list[UploadFile], File(description="label NIfTI files (.nii or .nii.gz), 2D or 3D")],
    request: Request,
    context: ContextDep,
    owner: OwnerDep,
    parsers: ParsePoolDep,
) -> LesionSetPublic:
    """Check and store label files (values in {0, 1, 2, 4}, 2D or 3D, each with a lesion, within the
    service's limits on slices and voxels); pass the answer's ``id`` as a dataset's ``lesion_source``."""
    uploads = [((upload.filename or f"file {i}")[:255], upload) for i, upload in enumerate(files)]
    return _public(await save_lesion_set(context, parsers, owner, uploads, request.is_disconnected))


@router.get("", responses=errors(401))
def get_lesion_sets(context: ContextDep, owner: OwnerDep) -> LesionSetList:
    """The caller's lesion sets, newest first."""
    records = context.store.uploads(LESION_SETS, owner)
    return LesionSetList(lesion_sets=[_public(record) for record in records])


@router.get("/{lesion_set_id}", responses=errors(401, 404))
def get_lesion_set(record: OwnLesionSetDep) -> LesionSetPublic:
    """One of the caller's lesion sets; 404 if it is unknown, expired or another key's."""
    return _public(record)


@router.delete("/{lesion_set_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 404, 409))
def remove_lesion_set(context: ContextDep, record: OwnLesionSetDep) -> Response:
    """Delete one of the caller's lesion sets with its files; 409 while a queued or running dataset
    draws its lesions from it."""
    delete_upload(context, LESION_SETS, record)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
