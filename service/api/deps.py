"""Typed FastAPI dependencies: the app's context, the caller (by API key), the caller's dataset and
lesion set.

With API keys configured (``settings.api_keys``) every request needs ``Authorization: Bearer <key>``
(:mod:`service.auth`) and the caller is known by the key's sha256 only. With none configured every
request belongs to one local owner, and the app answers loopback clients only (:mod:`service.loopback`).
"""

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi import Path as PathParam
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.auth import owner_for
from service.context import ServiceContext
from service.datasets import find_dataset
from service.lesion_sets import find_lesion_set
from service.store import DatasetRecord, LesionSetRecord

bearer = HTTPBearer(auto_error=False, description="One of the service's API keys (MRISYNTH_API_KEYS)")


def get_context(request: Request) -> ServiceContext:
    """The app's :class:`~service.context.ServiceContext`."""
    context: ServiceContext = request.app.state.context
    return context


ContextDep = Annotated[ServiceContext, Depends(get_context)]


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


def get_own_lesion_set(
    context: ContextDep, owner: OwnerDep, lesion_set_id: Annotated[str, PathParam(max_length=64)]
) -> LesionSetRecord:
    """The caller's lesion set of the path; 404 if it is unknown or another key's."""
    record = find_lesion_set(context, owner, lesion_set_id)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"lesion_set_id: no lesion set {lesion_set_id!r}")
    return record


OwnLesionSetDep = Annotated[LesionSetRecord, Depends(get_own_lesion_set)]
