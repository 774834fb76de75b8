"""Uploaded scan sets: one case's registered modalities (and optionally its lesion label) to synthesize
on, a dataset's ``structure_source`` (Sec. 2.5; ``docs/translations.md``).

A scan set is stored as ``data_dir/scan-sets/<id>/<key>.nii[.gz]``, one file per key of
:data:`worker.scans.SCAN_KEYS`, by :mod:`service.uploads` as lesion sets are: staged, checked in a parser
process with the worker's own reader (:func:`service.parsing.check_scan_uploads`: the lesion sets' limits
on slices and voxels, one shape, one affine, finite voxels, label values), stored whole or not at all,
kept ``lesion_set_ttl_s`` and deleted only when no queued or running dataset reads it.
"""

import logging
from collections.abc import Awaitable, Callable, Mapping

from fastapi import HTTPException, UploadFile, status

from service.context import ServiceContext
from service.parsing import ParsePool, check_scan_uploads
from service.store import SCAN_SETS, ScanSetRecord
from service.uploads import save_upload
from worker.lesions import LabelLimits
from worker.scans import LABEL_FILE_KEY, SCAN_KEYS

log = logging.getLogger(__name__)


def scan_uploads(files: Mapping[str, UploadFile | None]) -> dict[str, UploadFile]:
    """The given files of a scan upload by key, in :data:`~worker.scans.SCAN_KEYS` order.

    Raises:
        HTTPException: 422 when no modality is given.
    """
    given = {key: upload for key in SCAN_KEYS if (upload := files.get(key)) is not None}
    if not set(given) - {LABEL_FILE_KEY}:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "files: upload at least one of t1, t1ce, t2, flair"
        )
    return given


async def save_scan_set(
    context: ServiceContext,
    parsers: ParsePool,
    owner: str,
    uploads: Mapping[str, UploadFile],
    disconnected: Callable[[], Awaitable[bool]],
) -> ScanSetRecord:
    """Check and store one case's files as the owner's new scan set.

    Args:
        context: the service.
        parsers: where the files are checked.
        owner: the uploading owner.
        uploads: file key -> upload (:func:`scan_uploads`).
        disconnected: whether the client went away (``Request.is_disconnected``).

    Raises:
        HTTPException: 422 naming the bad file by its key and why (``t2: its affine differs from t1's``),
            or ``files`` for the set's total; 409 at one of the owner's quotas; 503 when the artifacts are
            not loaded or the check did not end within ``upload_parse_timeout_s``; 499 when the client
            went away. Nothing is stored.
    """
    keys = list(uploads)
    names = {key: (upload.filename or key)[:255] for key, upload in uploads.items()}
    record = await save_upload(
        context,
        parsers,
        SCAN_SETS,
        owner,
        list(uploads.items()),
        check_scan_uploads,
        (keys, LabelLimits.of(context.settings)),
        lambda checked: {"files": names, "shape": list(checked[0]), "sha256": checked[1]},
        disconnected,
    )
    log.info("scan set %s: %s of shape %s", record.id, keys, tuple(record.shape))
    return record
