"""``POST /translations``: one case's uploaded modalities translated into the missing ones (Sec. 2.4).

The files are staged as ``<key>.nii[.gz]`` in the new dataset's own folder,
``data_dir/datasets/<id>/.partial-scan``, checked as scan sets are (:func:`service.uploads.stage_and_check`
with :func:`service.parsing.check_scan_uploads`), renamed to ``data_dir/datasets/<id>/scan`` and the
dataset queued (:func:`service.datasets.create_dataset`). The scan lives and goes with its dataset: it
counts towards the owner's disk quota, and deleting, failing or expiring the dataset removes it. A
refused or failed request leaves nothing behind.
"""

import logging
import math
import shutil
import uuid
from collections.abc import Awaitable, Callable, Mapping

from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from service.context import ServiceContext
from service.datasets import create_dataset
from service.parsing import ParsePool, check_scan_uploads
from service.quotas import check_dataset_quota
from service.schemas import DatasetCreate
from service.store import DatasetRecord, TranslationUpload
from service.uploads import client_gone, loaded_manifest, stage_and_check
from worker.jobs import dataset_dir
from worker.lesions import LabelLimits

log = logging.getLogger(__name__)

SCAN_FOLDER = "scan"
"""The uploaded scan's folder inside its dataset's folder."""


async def create_translation(
    context: ServiceContext,
    parsers: ParsePool,
    owner: str,
    body: DatasetCreate,
    uploads: Mapping[str, UploadFile],
    disconnected: Callable[[], Awaitable[bool]],
) -> DatasetRecord:
    """Check and stage an uploaded scan, then queue its translation into ``body.modalities``.

    Args:
        context: the service.
        parsers: where the files are checked.
        owner: the uploading owner.
        body: the dataset request (``n`` 1, the target modalities, the layout).
        uploads: file key (``t1``, ``t1ce``, ``t2``, ``flair``) -> uploaded file.
        disconnected: whether the client went away (``Request.is_disconnected``).

    Raises:
        HTTPException: 422 naming the bad file by its key and why; 409 at a quota; 429 at the active-job
            limit; 503 when the artifacts are not loaded or the check did not end within
            ``upload_parse_timeout_s``; 499 when the client went away. Nothing is stored.
    """
    loaded_manifest(context)
    await run_in_threadpool(check_dataset_quota, context, owner)
    dataset_id = uuid.uuid4().hex
    folder = dataset_dir(context.settings, dataset_id)
    staging = folder / f".partial-{SCAN_FOLDER}"
    staging.mkdir(parents=True)
    limits = LabelLimits.of(context.settings)
    try:
        shape, _ = await stage_and_check(
            parsers, staging, list(uploads.items()), check_scan_uploads, (list(uploads), limits), disconnected
        )
        if await disconnected():
            raise client_gone()
        scan = TranslationUpload(
            dataset_id=dataset_id, folder=staging.rename(folder / SCAN_FOLDER), slices=math.prod(shape[2:])
        )
        record = await run_in_threadpool(create_dataset, context, owner, body, None, scan)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    log.info(
        "dataset %s: translation of an uploaded scan of shape %s (%s)", record.id, shape, sorted(uploads)
    )
    return record
