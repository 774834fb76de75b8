"""Uploaded lesion sets: label NIfTI files checked off the event loop, stored atomically, listed,
deleted and expired.

Each file is staged as ``<i>.nii`` or ``<i>.nii.gz`` (by its content: gzip or not; the client's file
name is only shown back) in a hidden folder under ``data_dir/lesion-sets``, checked in a parser process
(:func:`service.parsing.check_label_uploads`: the worker's own checks, which bound the work of every file
and of the set from the headers before a voxel is read), and the folder is renamed to
``data_dir/lesion-sets/<id>/`` once every file passed, the client is still there and the owner's quotas
allow it (:mod:`service.quotas`), so a set is complete or absent. The folder is what the jobs get as
``lesion_source``. A set's record expires ``lesion_set_ttl_s`` after its upload; the sweep then removes
its files (:func:`expire_lesion_sets`), unless a queued or running dataset still uses them.
"""

import asyncio
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from fastapi import HTTPException, UploadFile, status
from starlette.concurrency import run_in_threadpool

from mrisynth.settings import Settings
from service.context import ServiceContext
from service.parsing import ParsePool, UploadError, check_label_uploads
from service.quotas import check_lesion_set_quota, lesion_sets_full
from service.store import FINAL_STATES, LesionSetRecord
from worker.lesions import LabelLimits

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


def lesion_set_dir(settings: Settings, lesion_set_id: str) -> Path:
    """Folder of a lesion set's files."""
    return settings.data_dir / "lesion-sets" / lesion_set_id


def find_lesion_set(context: ServiceContext, owner: str, lesion_set_id: str) -> LesionSetRecord | None:
    """The owner's lesion set, or None if there is none, it expired or it is another owner's."""
    record = context.store.get_lesion_set(lesion_set_id)
    return record if record is not None and record.owner == owner else None


async def _stage(upload: UploadFile, staging: Path, index: int) -> Path:
    """Copy an upload to ``staging/<index>.nii[.gz]``, the suffix by its first bytes."""
    chunk = await upload.read(STAGE_CHUNK)
    path = staging / f"{index:03d}{'.nii.gz' if chunk.startswith(GZIP_MAGIC) else '.nii'}"
    with path.open("wb") as out:
        while chunk:
            out.write(chunk)
            chunk = await upload.read(STAGE_CHUNK)
    return path


def _store(
    context: ServiceContext, owner: str, names: list[str], slices: int, staging: Path
) -> LesionSetRecord:
    """Save the record of a checked staging folder, then rename the folder to the set's; 409 at a quota."""
    settings = context.settings
    size = sum(path.stat().st_size for path in staging.iterdir())
    check_lesion_set_quota(context, owner, size)
    now = datetime.now(UTC)
    record = LesionSetRecord(
        id=uuid.uuid4().hex,
        owner=owner,
        files=names,
        slices=slices,
        size_bytes=size,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.lesion_set_ttl_s),
    )
    if not context.store.add_lesion_set(record, settings.max_lesion_sets_per_owner):
        raise lesion_sets_full(settings.max_lesion_sets_per_owner)
    try:
        staging.chmod(0o755)
        staging.rename(lesion_set_dir(settings, record.id))
    except BaseException:
        context.store.forget_lesion_set(record)
        raise
    return record


def _gone() -> HTTPException:
    return HTTPException(CLIENT_CLOSED_REQUEST, "request: the client went away; nothing was stored")


async def _unless_gone(work: Awaitable[T], disconnected: Callable[[], Awaitable[bool]]) -> T:
    """The result of ``work``, cancelled (499) if the client goes away meanwhile, so that a check nobody
    waits for does not hold a parser (asked every :data:`DISCONNECT_POLL_S`)."""
    task = asyncio.ensure_future(work)
    try:
        while not (await asyncio.wait({task}, timeout=DISCONNECT_POLL_S))[0]:
            if await disconnected():
                raise _gone()
        return task.result()
    finally:
        task.cancel()


async def save_lesion_set(
    context: ServiceContext,
    parsers: ParsePool,
    owner: str,
    uploads: list[tuple[str, UploadFile]],
    disconnected: Callable[[], Awaitable[bool]],
) -> LesionSetRecord:
    """Check and store uploaded label files as the owner's new lesion set.

    Args:
        context: the service.
        parsers: where the files are checked.
        owner: the uploading owner.
        uploads: (client file name, upload) of each file, in order.
        disconnected: whether the client went away (``Request.is_disconnected``); asked before the set
            is saved.

    Raises:
        HTTPException: 422 naming the first bad file (``files[i] (name)``) and why, or ``files`` for
            a set over its limits; 409 at one of the owner's quotas; 503 when the artifacts are not
            loaded (their image size is needed) or the check did not end within
            ``upload_parse_timeout_s``; 499 when the client went away. Nothing is stored.
    """
    settings = context.settings
    if context.manifest is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"artifacts not loaded: {context.artifacts_error}"
        )
    await run_in_threadpool(check_lesion_set_quota, context, owner)
    root = settings.data_dir / "lesion-sets"
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
    try:
        files = [await _stage(upload, staging, index) for index, (_, upload) in enumerate(uploads)]
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    names = [name for name, _ in uploads]
    limits = LabelLimits.of(settings)
    check = parsers.run(
        lambda: shutil.rmtree(staging, ignore_errors=True),
        check_label_uploads,
        files,
        names,
        context.manifest.image_size,
        limits,
    )
    try:
        slices = await _unless_gone(check, disconnected)
    except UploadError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from error
    except (TimeoutError, BrokenProcessPool) as error:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"files: not checked within {parsers.timeout_s:g} s (the service's upload_parse_timeout_s); "
            "the service is busy, try again later",
        ) from error
    try:
        if await disconnected():
            raise _gone()
        record = await run_in_threadpool(_store, context, owner, names, slices, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("lesion set %s: %d files, %d lesion slices", record.id, len(uploads), slices)
    return record


def list_lesion_sets(context: ServiceContext, owner: str) -> list[LesionSetRecord]:
    """The owner's lesion sets, newest first."""
    return context.store.lesion_sets(owner)


def delete_lesion_set(context: ServiceContext, record: LesionSetRecord) -> None:
    """Forget a lesion set and remove its files.

    Raises:
        HTTPException: 409 while a queued or running dataset of its owner draws its lesions from it.
    """
    store, folder = context.store, lesion_set_dir(context.settings, record.id)
    for dataset_id in sorted(store.active_ids(record.owner)):
        dataset = store.get_dataset(dataset_id)
        if dataset is not None and dataset.state not in FINAL_STATES and dataset.lesion_source == folder:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"lesion_set_id: lesion set {record.id!r} is the lesion source of dataset {dataset.id!r}, "
                f"which is {dataset.state}; delete it once the dataset ended",
            )
    store.forget_lesion_set(record)
    shutil.rmtree(folder, ignore_errors=True)
    log.info("lesion set %s deleted", record.id)


def expire_lesion_sets(context: ServiceContext, in_use: set[Path]) -> None:
    """Remove the files of lesion sets whose record expired, but for the folders in ``in_use`` (those of
    queued or running datasets), and staging folders left by a stopped process."""
    settings = context.settings
    root = settings.data_dir / "lesion-sets"
    if not root.is_dir():
        return
    stale = time.time() - settings.upload_parse_timeout_s - STAGING_GRACE_S
    for folder in root.iterdir():
        if folder.name.startswith(".partial-"):
            if folder.stat().st_mtime < stale:
                shutil.rmtree(folder, ignore_errors=True)
        elif folder not in in_use and context.store.get_lesion_set(folder.name) is None:
            shutil.rmtree(folder, ignore_errors=True)
            log.info("lesion set %s expired, its files are removed", folder.name)
