"""Uploaded lesion sets: label NIfTI files checked, then stored atomically under ``data_dir``.

Each file is stored as ``<i>.nii`` or ``<i>.nii.gz`` (by its content: gzip or not; the client's file
name is only shown back) in a hidden staging folder, checked, and the folder is renamed to
``data_dir/lesion-sets/<id>/`` once every file passed, so a set is complete or absent. The checks are
the worker's own (:func:`worker.lesions.read_label_files`: a real NIfTI, 2D or 3D, values in
{0, 1, 2, 4}, a slice with a lesion), after a look at the header that refuses volumes over
:data:`MAX_LABEL_VOXELS`, empty or negative axes and voxel types that are not numbers before the voxels
are read. The folder is what the jobs get as ``lesion_source``.
"""

import logging
import shutil
import tempfile
import uuid
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import nibabel as nib
import numpy as np
from fastapi import HTTPException, status
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from mrisynth.settings import Settings
from service.context import ServiceContext
from service.disk import check_disk_cap
from service.store import LesionSetRecord
from worker.lesions import read_label_files

log = logging.getLogger(__name__)

MAX_LABEL_VOXELS = 2 * 240 * 240 * 155
"""Most voxels of one label file: twice a BraTS volume."""

GZIP_MAGIC = b"\x1f\x8b"

UNREADABLE: tuple[type[Exception], ...] = (
    ImageFileError,
    HeaderDataError,
    OSError,
    EOFError,
    OverflowError,
    ValueError,
    zlib.error,
)
"""What nibabel raises for a file that is not a NIfTI image, or a damaged or inconsistent one."""


def lesion_set_dir(settings: Settings, lesion_set_id: str) -> Path:
    """Folder of a lesion set's files."""
    return settings.data_dir / "lesion-sets" / lesion_set_id


def _invalid(field: str, why: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{field}: {why}")


def _check_label_file(path: Path, field: str, image_size: tuple[int, int]) -> int:
    """Number of lesion slices of a stored upload; 422 naming the upload if it is not a label file."""

    def hide_path(text: str) -> str:
        return text.replace(f"{path}: ", "").replace(str(path), "the file")

    try:
        image = nib.load(path)
    except UNREADABLE as error:
        raise _invalid(field, hide_path(f"not a NIfTI image ({error})")) from error
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise _invalid(field, f"a {type(image).__name__}, not a NIfTI image")
    shape, dtype = tuple(int(n) for n in image.shape), image.get_data_dtype()
    if dtype.kind not in "biuf":
        raise _invalid(field, f"voxels of type {dtype}, not numbers")
    if not shape or min(shape) < 1:
        raise _invalid(field, f"shape {shape} has no voxels")
    voxels = int(np.prod(shape, dtype=np.int64))
    if voxels > MAX_LABEL_VOXELS:
        raise _invalid(field, f"{voxels} voxels {shape}, more than the {MAX_LABEL_VOXELS} allowed")
    try:
        return len(read_label_files(path, image_size))
    except ValueError as error:
        raise _invalid(field, hide_path(str(error))) from error
    except UNREADABLE as error:
        raise _invalid(field, hide_path(f"a damaged NIfTI image ({error})")) from error


def find_lesion_set(context: ServiceContext, owner: str, lesion_set_id: str) -> LesionSetRecord | None:
    """The owner's lesion set, or None if there is none or it is another owner's."""
    record = context.store.get_lesion_set(lesion_set_id)
    return record if record is not None and record.owner == owner else None


def save_lesion_set(
    context: ServiceContext, owner: str, uploads: list[tuple[str, BinaryIO]]
) -> LesionSetRecord:
    """Check and store uploaded label files as the owner's new lesion set.

    Args:
        context: the service.
        owner: the uploading owner.
        uploads: (client file name, readable binary stream) of each file, in order.

    Raises:
        HTTPException: 422 naming the first bad file (``files[i] (name)``) and why; 409 at the disk
            cap; 503 when the artifacts are not loaded (their image size is needed).
    """
    settings = context.settings
    if context.manifest is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"artifacts not loaded: {context.artifacts_error}"
        )
    check_disk_cap(settings)
    lesion_set_id = uuid.uuid4().hex
    final = lesion_set_dir(settings, lesion_set_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".partial-{lesion_set_id}-", dir=final.parent))
    try:
        slices = 0
        for index, (name, stream) in enumerate(uploads):
            gzipped = stream.read(2) == GZIP_MAGIC
            stream.seek(0)
            path = staging / f"{index:03d}{'.nii.gz' if gzipped else '.nii'}"
            with path.open("wb") as out:
                shutil.copyfileobj(stream, out)
            slices += _check_label_file(path, f"files[{index}] ({name})", context.manifest.image_size)
        size = sum(path.stat().st_size for path in staging.iterdir())
        staging.chmod(0o755)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    record = LesionSetRecord(
        id=lesion_set_id,
        owner=owner,
        files=[name for name, _ in uploads],
        slices=slices,
        size_bytes=size,
        created_at=datetime.now(UTC),
    )
    try:
        context.store.add_lesion_set(record)
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    log.info("lesion set %s: %d files, %d lesion slices", lesion_set_id, len(uploads), slices)
    return record
