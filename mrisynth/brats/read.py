"""Reading one BraTS case into arrays in our modality names and labels, with its validation.

NIfTI files are read with nibabel as stored (no reorientation): BraTS volumes are (240, 240, 155) arrays
indexed (x, y, z) with axial slices on the last axis. BraTS 2015 ``.mha`` files are read with SimpleITK
(the optional ``brats2015`` extra, imported only for them), whose (z, y, x) arrays are transposed to the
same (x, y, z) order.
"""

import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from mrisynth.brats.errors import BratsError
from mrisynth.brats.layouts import LABEL_MAPS, CaseFiles, Layout
from mrisynth.conventions import MODALITIES

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True, eq=False)
class CaseVolume:
    """One case's volumes.

    Attributes:
        case_id: the case's name.
        images: float32 (X, Y, Z) volume per modality, keyed by our names in `MODALITIES` order;
            (240, 240, 155) for BraTS.
        label: uint8 (X, Y, Z) volume with values in `mrisynth.conventions.LABELS`, or None when the case
            has no label file.
        affine: float64 (4, 4) voxel-to-RAS (mm) matrix of the first modality.
    """

    case_id: str
    images: dict[str, np.ndarray]
    label: np.ndarray | None
    affine: np.ndarray


def read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI-1 or -2 file's voxels as stored and its (4, 4) affine; `BratsError` naming the file if it
    is not a readable NIfTI image."""
    try:
        image = nib.load(path)
        if isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
            return np.asanyarray(image.dataobj), image.affine
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise BratsError(f"cannot read {path} as NIfTI: {exc}") from exc
    raise BratsError(f"{path} is a {type(image).__name__}, not a NIfTI image")


def _read_mha(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        import SimpleITK
    except ImportError as exc:
        raise ImportError(
            f"reading BraTS 2015 .mha files such as {path} needs SimpleITK: pip install 'mrisynth[brats2015]'"
        ) from exc
    try:
        image = SimpleITK.ReadImage(str(path))
    except RuntimeError as exc:
        raise BratsError(f"cannot read {path} as an .mha image: {exc}") from exc
    data = SimpleITK.GetArrayFromImage(image).T
    dimension = image.GetDimension()
    affine = np.eye(4)
    direction = np.reshape(image.GetDirection(), (dimension, dimension))[:3, :3]
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(image.GetSpacing()[:3])
    affine[:3, 3] = _LPS_TO_RAS @ np.asarray(image.GetOrigin()[:3])
    return data, affine


def _read_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A 3D volume as stored, (X, Y, Z), and its (4, 4) voxel-to-RAS affine."""
    data, affine = _read_mha(path) if path.suffix == ".mha" else read_nifti(path)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise BratsError(f"{path}: expected a 3D volume, got shape {data.shape}")
    return data, affine


def _to_labels(raw: np.ndarray, path: Path, layout: Layout) -> np.ndarray:
    """Validate a label volume against its layout's values and map them to ours (uint8)."""
    allowed = LABEL_MAPS[layout]
    values = np.unique(raw)
    bad = [value for value in values.tolist() if value not in allowed]
    if bad:
        shown = ", ".join(f"{value:g}" for value in bad)
        raise BratsError(f"{path}: label values {shown} are not {layout} labels {sorted(allowed)}")
    lookup = np.zeros(max(allowed) + 1, dtype=np.uint8)
    for value, ours in allowed.items():
        lookup[value] = ours
    return lookup[raw.astype(np.uint8, copy=False)]


def load_case(case: CaseFiles) -> CaseVolume:
    """Read and validate one case.

    Args:
        case: the case's files, as found by `mrisynth.brats.find_cases`.

    Returns:
        The case's float32 (X, Y, Z) images in our modality names, its uint8 label volume in {0, 1, 2, 4}
        (BraTS 2023's 3 and BraTS 2015's 3 mapped to 4 and 1), and the first modality's affine.

    Raises:
        BratsError: a file is unreadable or not 3D, the volumes of the case disagree in shape (both files
            and shapes named), or the label file holds values outside its layout's labels (file and values
            named).
        ImportError: a BraTS 2015 case and SimpleITK is not installed.
    """
    images: dict[str, np.ndarray] = {}
    affine = np.eye(4)
    first = case.images[MODALITIES[0]]
    for modality in MODALITIES:
        path = case.images[modality]
        data, file_affine = _read_volume(path)
        if modality == MODALITIES[0]:
            affine = file_affine
        elif data.shape != images[MODALITIES[0]].shape:
            raise BratsError(
                f"case {case.case_id}: {path} has shape {data.shape} "
                f"but {first} has shape {images[MODALITIES[0]].shape}"
            )
        images[modality] = data.astype(np.float32, copy=False)
    label = None
    if case.label is not None:
        raw, _ = _read_volume(case.label)
        if raw.shape != images[MODALITIES[0]].shape:
            raise BratsError(
                f"case {case.case_id}: {case.label} has shape {raw.shape} "
                f"but {first} has shape {images[MODALITIES[0]].shape}"
            )
        label = _to_labels(raw, case.label, case.layout)
    return CaseVolume(case.case_id, images, label, affine)
