"""Uploaded lesion sets: label NIfTI files to draw a dataset's lesions from, stored as
``data_dir/lesion-sets/<id>/<i>.nii[.gz]`` by :mod:`service.uploads` (staged, checked in a parser process
with :func:`service.parsing.check_label_uploads`, stored whole or not at all, expired).
"""

import logging
from collections.abc import Awaitable, Callable

from fastapi import UploadFile

from service.context import ServiceContext
from service.parsing import ParsePool, check_label_uploads
from service.store import LESION_SETS, LesionSetRecord
from service.uploads import loaded_manifest, save_upload
from worker.lesions import LabelLimits

log = logging.getLogger(__name__)


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
    names = [name for name, _ in uploads]
    size = loaded_manifest(context).image_size
    record = await save_upload(
        context,
        parsers,
        LESION_SETS,
        owner,
        [(f"{index:03d}", upload) for index, (_, upload) in enumerate(uploads)],
        check_label_uploads,
        (names, size, LabelLimits.of(context.settings)),
        lambda slices: {"files": names, "slices": slices},
        disconnected,
    )
    log.info("lesion set %s: %d files, %d lesion slices", record.id, len(uploads), record.slices)
    return record
