"""Uploaded sets, the code lesion sets (:mod:`service.lesion_sets`) and scan sets (:mod:`service.scan_sets`)
share: files staged, checked off the event loop, stored atomically, found, deleted and expired.

Each file is staged as ``<stem>.nii`` or ``<stem>.nii.gz`` (by its content: gzip or not; the client's file
name is only shown back) in a hidden folder ``data_dir/<kind>s/.partial-*``, checked in a parser process
with the worker's own reader (which bounds the work of every file and of the set from the headers before
a voxel is read), and the folder is renamed to ``data_dir/<kind>s/<id>/`` once every file passed, the
client is still there and the owner's quotas allow it (:mod:`service.quotas`), so a set is complete or
absent. The folder is what the jobs get (``lesion_source``, ``structure_source``). A set's record expires
``lesion_set_ttl_s`` after its upload; the sweep then removes its files (:func:`expire_uploads`), unless a
queued or running dataset still uses them.
"""

import asyncio
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from fastapi import HTTPException, UploadFile, status
from starlette.concurrency import run_in_threadpool

from mrisynth.artifacts import Manifest
from mrisynth.settings import Settings
from service.context import ServiceContext
from service.parsing import ParsePool, UploadError
from service.quotas import check_upload_quota, uploads_full
from service.store import FINAL_STATES, R, UploadKind

log = logging.getLogger(__name__)

T = TypeVar("T")

GZIP_MAGIC = b"\x1f\x8b"

STAGE_CHUNK = 1 << 20
"""Bytes of an upload copied to its staging file at a time."""

STAGING_GRACE_S = 600
"""A staging folder older than ``upload_parse_timeout_s`` plus this is left by a stopped process."""

DISCONNECT_POLL_S = 0.5
"""How often an upload waiting for its check asks whether its client is still there."""

CLIENT_CLOSED_REQUEST = 499
"""The status logged for an upload whose client went away (nginx's): nobody reads the answer."""


def loaded_manifest(context: ServiceContext) -> Manifest:
    """The artifacts' manifest; 503 when they are not loaded (uploads are checked against them)."""
    if context.manifest is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"artifacts not loaded: {context.artifacts_error}"
        )
    return context.manifest


def upload_dir(settings: Settings, kind: UploadKind[Any], upload_id: str) -> Path:
    """Folder of an uploaded set's files, ``data_dir/<kind>s/<id>``."""
    return settings.data_dir / kind.plural / upload_id


def find_upload(context: ServiceContext, kind: UploadKind[R], owner: str, upload_id: str) -> R | None:
    """The owner's set of a kind, or None if there is none, it expired or it is another owner's."""
    record = context.store.get_upload(kind, upload_id)
    return record if record is not None and record.owner == owner else None


async def stage_upload(upload: UploadFile, staging: Path, stem: str) -> Path:
    """Copy an upload to ``staging/<stem>.nii[.gz]``, the suffix by its first bytes."""
    chunk = await upload.read(STAGE_CHUNK)
    path = staging / f"{stem}{'.nii.gz' if chunk.startswith(GZIP_MAGIC) else '.nii'}"
    with path.open("wb") as out:
        while chunk:
            out.write(chunk)
            chunk = await upload.read(STAGE_CHUNK)
    return path


def client_gone() -> HTTPException:
    return HTTPException(CLIENT_CLOSED_REQUEST, "request: the client went away; nothing was stored")


async def unless_gone(work: Awaitable[T], disconnected: Callable[[], Awaitable[bool]]) -> T:
    """The result of ``work``, cancelled (499) if the client goes away meanwhile, so that a check nobody
    waits for does not hold a parser (asked every :data:`DISCONNECT_POLL_S`)."""
    task = asyncio.ensure_future(work)
    try:
        while not (await asyncio.wait({task}, timeout=DISCONNECT_POLL_S))[0]:
            if await disconnected():
                raise client_gone()
        return task.result()
    finally:
        task.cancel()


async def stage_and_check(
    parsers: ParsePool,
    staging: Path,
    uploads: Sequence[tuple[str, UploadFile]],
    check: Callable[..., T],
    args: tuple[Any, ...],
    disconnected: Callable[[], Awaitable[bool]],
) -> T:
    """Stage uploads in ``staging`` (an existing folder) and check them in a parser process.

    Args:
        parsers: where the files are checked.
        staging: the folder; removed when staging or the check fails (once no parser reads it).
        uploads: (file stem, upload) of each file, in order.
        check: a module-level function, ``check(staged paths, *args)``, raising
            :class:`~service.parsing.UploadError` for bad files.
        args: its other arguments.
        disconnected: whether the client went away (``Request.is_disconnected``).

    Returns:
        What ``check`` returned.

    Raises:
        HTTPException: 422 with the check's message; 503 when it did not end within
            ``upload_parse_timeout_s``; 499 when the client went away.
    """
    remove = partial(shutil.rmtree, staging, ignore_errors=True)
    try:
        files = [await stage_upload(upload, staging, stem) for stem, upload in uploads]
    except BaseException:
        remove()
        raise
    try:
        return await unless_gone(parsers.run(remove, check, files, *args), disconnected)
    except UploadError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from error
    except (TimeoutError, BrokenProcessPool) as error:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"files: not checked within {parsers.timeout_s:g} s (the service's upload_parse_timeout_s); "
            "the service is busy, try again later",
        ) from error


def _store(
    context: ServiceContext, kind: UploadKind[R], owner: str, fields: dict[str, Any], staging: Path
) -> R:
    """Save the record of a checked staging folder, then rename the folder to the set's; 409 at a quota."""
    settings = context.settings
    size = sum(path.stat().st_size for path in staging.iterdir())
    check_upload_quota(context, owner, kind, size)
    now = datetime.now(UTC)
    record = kind.record(
        id=uuid.uuid4().hex,
        owner=owner,
        size_bytes=size,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.lesion_set_ttl_s),
        **fields,
    )
    if not context.store.add_upload(kind, record, settings.max_lesion_sets_per_owner):
        raise uploads_full(kind, settings.max_lesion_sets_per_owner)
    try:
        staging.chmod(0o755)
        staging.rename(upload_dir(settings, kind, record.id))
    except BaseException:
        context.store.forget_upload(kind, record)
        raise
    return record


async def save_upload(
    context: ServiceContext,
    parsers: ParsePool,
    kind: UploadKind[R],
    owner: str,
    uploads: Sequence[tuple[str, UploadFile]],
    check: Callable[..., T],
    args: tuple[Any, ...],
    fields: Callable[[T], dict[str, Any]],
    disconnected: Callable[[], Awaitable[bool]],
) -> R:
    """Check and store uploaded files as the owner's new set of a kind (module docstring).

    Args:
        context: the service.
        parsers: where the files are checked.
        kind: the kind of set.
        owner: the uploading owner.
        uploads: (file stem, upload) of each file, in order.
        check: ``check(staged paths, *args)`` in a parser process (:func:`stage_and_check`).
        args: its other arguments.
        fields: the record's fields of the kind, from what ``check`` returned.
        disconnected: whether the client went away; asked before the set is saved.

    Raises:
        HTTPException: 422 for bad files; 409 at one of the owner's quotas; 503 when the artifacts are not
            loaded or the check did not end within ``upload_parse_timeout_s``; 499 when the client went
            away. Nothing is stored.
    """
    loaded_manifest(context)
    await run_in_threadpool(check_upload_quota, context, owner, kind)
    root = context.settings.data_dir / kind.plural
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
    checked = await stage_and_check(parsers, staging, uploads, check, args, disconnected)
    try:
        if await disconnected():
            raise client_gone()
        return await run_in_threadpool(_store, context, kind, owner, fields(checked), staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def delete_upload(context: ServiceContext, kind: UploadKind[R], record: R) -> None:
    """Forget an uploaded set and remove its files.

    Raises:
        HTTPException: 409 while a queued or running dataset of its owner reads it.
    """
    store, folder = context.store, upload_dir(context.settings, kind, record.id)
    for dataset_id in sorted(store.active_ids(record.owner)):
        dataset = store.get_dataset(dataset_id)
        if dataset is not None and dataset.state not in FINAL_STATES and dataset.uses(folder):
            role = "lesion source" if dataset.lesion_source == folder else "structure source"
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"{kind.id_field}: {kind.noun} {record.id!r} is the {role} of dataset {dataset.id!r}, "
                f"which is {dataset.state}; delete it once the dataset ended",
            )
    store.forget_upload(kind, record)
    shutil.rmtree(folder, ignore_errors=True)
    log.info("%s %s deleted", kind.noun, record.id)


def expire_uploads(context: ServiceContext, kind: UploadKind[Any], in_use: set[Path]) -> None:
    """Remove the files of a kind's sets whose record expired, but for the folders in ``in_use`` (those of
    queued or running datasets), and staging folders left by a stopped process."""
    settings = context.settings
    root = settings.data_dir / kind.plural
    if not root.is_dir():
        return
    stale = time.time() - settings.upload_parse_timeout_s - STAGING_GRACE_S
    for folder in root.iterdir():
        if folder.name.startswith(".partial-"):
            if folder.stat().st_mtime < stale:
                shutil.rmtree(folder, ignore_errors=True)
        elif folder not in in_use and context.store.get_upload(kind, folder.name) is None:
            shutil.rmtree(folder, ignore_errors=True)
            log.info("%s %s expired, its files are removed", kind.noun, folder.name)
