"""``/lesion-sets``: upload label NIfTI files to draw a dataset's lesions from."""

from typing import Annotated

from fastapi import APIRouter, File, UploadFile, status

from service.api.deps import ContextDep, OwnerDep, OwnLesionSetDep
from service.api.responses import errors
from service.lesion_sets import save_lesion_set
from service.schemas import LesionSetPublic

router = APIRouter(prefix="/lesion-sets", tags=["lesion sets"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=errors(400, 401, 409, 413, 503),
)
def post_lesion_set(
    files: Annotated[list[UploadFile], File(description="label NIfTI files (.nii or .nii.gz), 2D or 3D")],
    context: ContextDep,
    owner: OwnerDep,
) -> LesionSetPublic:
    """Check and store label files (values in {0, 1, 2, 4}, 2D or 3D, each with a lesion); pass the
    answer's ``id`` as a dataset's ``lesion_source``."""
    uploads = [((upload.filename or f"file {i}")[:255], upload.file) for i, upload in enumerate(files)]
    record = save_lesion_set(context, owner, uploads)
    return LesionSetPublic.model_validate(record.model_dump(exclude={"owner"}))


@router.get("/{lesion_set_id}", responses=errors(401, 404))
def get_lesion_set(record: OwnLesionSetDep) -> LesionSetPublic:
    """One of the caller's lesion sets; 404 if it is unknown or another key's."""
    return LesionSetPublic.model_validate(record.model_dump(exclude={"owner"}))
