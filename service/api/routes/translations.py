"""``POST /translations``: one case's modalities translated into the missing ones (Sec. 2.4).

The case is uploaded with the request as multipart files named by what they hold, ``t1``, ``t1ce``,
``t2``, ``flair``, 2D or 3D NIfTI on one grid; the answer is a dataset's, followed, downloaded and
deleted at ``/datasets/{id}`` (``docs/translations.md``).
"""

from typing import Annotated, get_args

from fastapi import APIRouter, Form, HTTPException, Request, Response, status

from service.api.deps import ContextDep, ModalityFilesDep, OwnerDep, ParsePoolDep
from service.api.responses import errors
from service.scan_sets import scan_uploads
from service.schemas import DatasetCreate, DatasetCreated, Modality
from service.status import public
from service.translations import create_translation
from worker.bundle_layout import BundleLayout

router = APIRouter(tags=["translations"])


@router.post(
    "/translations", status_code=status.HTTP_202_ACCEPTED, responses=errors(400, 401, 409, 413, 429, 503)
)
async def post_translation(
    request: Request,
    response: Response,
    context: ContextDep,
    owner: OwnerDep,
    parsers: ParsePoolDep,
    modalities: ModalityFilesDep,
    targets: Annotated[
        list[Modality] | None, Form(description="modalities to make; default the missing")
    ] = None,
    layout: Annotated[BundleLayout, Form()] = BundleLayout.BRATS,
) -> DatasetCreated:
    """Translate the given modalities of a case into the missing ones (Sec. 2.4): EC of every given
    slice, the mean of the codes, DC in each target. The zip holds the targets on the input's grid."""
    uploads = scan_uploads(modalities)
    missing: list[Modality] = [m for m in get_args(Modality) if m not in uploads]
    wanted = list(dict.fromkeys(targets)) if targets else missing
    if not wanted:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "targets: every modality is given; name the ones to make"
        )
    body = DatasetCreate(n=1, modalities=wanted, lesion_source="none", layout=layout)
    record = await create_translation(context, parsers, owner, body, uploads, request.is_disconnected)
    dataset = public(context, record)
    response.headers["Location"] = f"/datasets/{dataset.id}"
    return DatasetCreated(id=dataset.id, state=dataset.state, status_url=f"/datasets/{dataset.id}")
