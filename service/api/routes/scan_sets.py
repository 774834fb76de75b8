"""``/scan-sets``: upload one case's registered modalities (and label) to synthesize on, list and delete
them; pass a scan set's id as a dataset's ``structure_source`` (Sec. 2.5, ``docs/translations.md``)."""

from typing import Annotated

from fastapi import APIRouter, File, Request, Response, UploadFile, status

from service.api.deps import ContextDep, ModalityFilesDep, OwnerDep, OwnScanSetDep, ParsePoolDep
from service.api.responses import errors
from service.scan_sets import save_scan_set, scan_uploads
from service.schemas import ScanSetList, ScanSetPublic
from service.store import SCAN_SETS, ScanSetRecord
from service.uploads import delete_upload

router = APIRouter(prefix="/scan-sets", tags=["scan sets"])


def _public(record: ScanSetRecord) -> ScanSetPublic:
    """The client's view of a record: all but its owner."""
    return ScanSetPublic.model_validate(record.model_dump(exclude={"owner"}))


@router.post("", status_code=status.HTTP_201_CREATED, responses=errors(400, 401, 409, 413, 503))
async def post_scan_set(
    request: Request,
    context: ContextDep,
    owner: OwnerDep,
    parsers: ParsePoolDep,
    modalities: ModalityFilesDep,
    seg: Annotated[
        UploadFile | None,
        File(description="the case's own lesion label, values 0, 1, 2, 4 (BraTS 2018-2021), removed"),
    ] = None,
) -> ScanSetPublic:
    """Check and store one case: at least one modality, all on one grid (same shape and affine), finite
    voxels, within the lesion sets' limits on slices and voxels; pass the answer's ``id`` as a dataset's
    ``structure_source``."""
    uploads = scan_uploads({**modalities, "seg": seg})
    return _public(await save_scan_set(context, parsers, owner, uploads, request.is_disconnected))


@router.get("", responses=errors(401))
def get_scan_sets(context: ContextDep, owner: OwnerDep) -> ScanSetList:
    """The caller's scan sets, newest first."""
    return ScanSetList(scan_sets=[_public(record) for record in context.store.uploads(SCAN_SETS, owner)])


@router.get("/{scan_set_id}", responses=errors(401, 404))
def get_scan_set(record: OwnScanSetDep) -> ScanSetPublic:
    """One of the caller's scan sets; 404 if it is unknown, expired or another key's."""
    return _public(record)


@router.delete("/{scan_set_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 404, 409))
def remove_scan_set(context: ContextDep, record: OwnScanSetDep) -> Response:
    """Delete one of the caller's scan sets with its files; 409 while a queued or running dataset is
    made on it."""
    delete_upload(context, SCAN_SETS, record)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
