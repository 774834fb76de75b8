"""Typed FastAPI dependencies: the app's context, the caller (by API key), the caller's dataset, lesion
set and scan set, and the modality files of an uploaded case.

With API keys configured (``settings.api_keys``) every request needs ``Authorization: Bearer <key>``
(:mod:`service.auth`) and the caller is known by the key's sha256 only. With none configured every
request belongs to one local owner, and the app answers loopback clients only (:mod:`service.loopback`).
"""

from typing import Annotated

from fastapi import Depends, File, HTTPException, Request, UploadFile, status
from fastapi import Path as PathParam
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.auth import owner_for
from service.context import ServiceContext
from service.datasets import find_dataset
from service.parsing import ParsePool
from service.store import LESION_SETS, SCAN_SETS, DatasetRecord, LesionSetRecord, R, ScanSetRecord, UploadKind
from service.uploads import find_upload

bearer = HTTPBearer(auto_error=False, description="One of the service's API keys (MRISYNTH_API_KEYS)")


def get_context(request: Request) -> ServiceContext:
    """The app's :class:`~service.context.ServiceContext`."""
    context: ServiceContext = request.app.state.context
    return context


ContextDep = Annotated[ServiceContext, Depends(get_context)]


async def get_parse_pool(request: Request) -> ParsePool:
    """The app's :class:`~service.parsing.ParsePool`, started by its lifespan."""
    pool: ParsePool = request.app.state.parse_pool
    return pool


ParsePoolDep = Annotated[ParsePool, Depends(get_parse_pool)]


def _query_names(dependant: Dependant) -> set[str]:
    """Names of the query parameters a route (or dependency) and its dependencies take."""
    names = {field.alias for field in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return names


def reject_unknown_query(request: Request) -> None:
    """422 for a query parameter the route does not take (a typo such as ``?limt=5`` is not ignored)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = _query_names(route.dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"query: unknown parameter {unknown[0]!r} (this route takes {takes})",
        )


def get_owner(
    context: ContextDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str:
    """The caller's owner id (:func:`service.auth.owner_for`); 401 without a valid bearer token when
    keys are configured."""
    return owner_for(context.settings, credentials.credentials if credentials is not None else None)


OwnerDep = Annotated[str, Depends(get_owner)]


def get_own_dataset(
    context: ContextDep, owner: OwnerDep, dataset_id: Annotated[str, PathParam(max_length=64)]
) -> DatasetRecord:
    """The caller's dataset of the path, up to date; 404 if it is unknown, another key's or expired."""
    return find_dataset(context, owner, dataset_id)


OwnDatasetDep = Annotated[DatasetRecord, Depends(get_own_dataset)]


def _own_upload(context: ServiceContext, kind: UploadKind[R], owner: str, upload_id: str) -> R:
    """The caller's set of a kind; 404 if it is unknown, expired or another key's."""
    record = find_upload(context, kind, owner, upload_id)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{kind.id_field}: no {kind.noun} {upload_id!r}")
    return record


def get_own_lesion_set(
    context: ContextDep, owner: OwnerDep, lesion_set_id: Annotated[str, PathParam(max_length=64)]
) -> LesionSetRecord:
    """The caller's lesion set of the path; 404 if it is unknown or another key's."""
    return _own_upload(context, LESION_SETS, owner, lesion_set_id)


OwnLesionSetDep = Annotated[LesionSetRecord, Depends(get_own_lesion_set)]


def get_own_scan_set(
    context: ContextDep, owner: OwnerDep, scan_set_id: Annotated[str, PathParam(max_length=64)]
) -> ScanSetRecord:
    """The caller's scan set of the path; 404 if it is unknown or another key's."""
    return _own_upload(context, SCAN_SETS, owner, scan_set_id)


OwnScanSetDep = Annotated[ScanSetRecord, Depends(get_own_scan_set)]


ScanFile = Annotated[
    UploadFile | None,
    File(description="NIfTI (.nii or .nii.gz), 2D (X, Y) or 3D (X, Y, Z) with axial slices on the last axis"),
]
"""One optional file of an uploaded case (``POST /scan-sets``, ``POST /translations``)."""


def get_modality_files(
    t1: ScanFile = None, t1ce: ScanFile = None, t2: ScanFile = None, flair: ScanFile = None
) -> dict[str, UploadFile | None]:
    """The multipart fields ``t1``, ``t1ce``, ``t2`` and ``flair`` of an uploaded case, by modality (None
    where not given); :func:`service.scan_sets.scan_uploads` checks that one is."""
    return {"t1": t1, "t1ce": t1ce, "t2": t2, "flair": flair}


ModalityFilesDep = Annotated[dict[str, UploadFile | None], Depends(get_modality_files)]
